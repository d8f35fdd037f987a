"""Shared fixtures: the running app and a real Chromium for tests marked `browser`.

Nothing here starts unless a browser test asks for it, so unit and AppTest runs stay fast.
A missing Chromium fails the browser tests; GPTVIZ_SKIP_BROWSER=1 skips them on a developer's
machine, and is refused in CI (CI=true), where a browser test must never be skipped.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

import browser as b

SKIP_ENV = "GPTVIZ_SKIP_BROWSER"


def pytest_configure(config):
    if b.truthy(SKIP_ENV) and b.truthy("CI"):
        raise pytest.UsageError(f"{SKIP_ENV}=1 is set in CI (CI=true): browser tests must run in CI, never be skipped.")
    # Initial weights kept on disk (gptviz.init_cache) go to this run's own directory, shared by
    # the app servers the browser tests start: a run never reads what an earlier one left.
    config._init_cache_dir = tempfile.mkdtemp(prefix="gptviz-init-cache-")
    os.environ["GPTVIZ_INIT_CACHE_DIR"] = config._init_cache_dir


def pytest_unconfigure(config):
    directory = getattr(config, "_init_cache_dir", None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if not b.truthy(SKIP_ENV):
        return
    skip = pytest.mark.skip(reason=f"{SKIP_ENV}=1: browser tests opted out on this machine (never allowed in CI)")
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def app_server():
    """`streamlit run app.py` on a free port for the whole session; its log is in artifacts/."""
    try:
        server = b.start_server()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def app_url(app_server) -> str:
    return app_server.url


@pytest.fixture(scope="session")
def chromium():
    """One headless Debian Chromium for the session, driven by Playwright."""
    path = b.chromium_path()
    if path is None:
        pytest.fail(
            "Chromium is missing: the browser tests need Debian's chromium (apt-get install chromium; "
            "scripts/test.sh installs it when run as root). Playwright must not download its own browser. "
            f"To skip browser tests on a local machine only, set {SKIP_ENV}=1.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = b.launch_chromium(playwright, path)
        except Exception as error:  # a broken install must fail loudly, with the reason
            pytest.fail(f"Chromium at {path} did not start: {error}", pytrace=False)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def browser_context(chromium, app_server):
    """One context for the session, so the browser caches Streamlit's JS between tests."""
    context = b.new_context(chromium, app_server.url)
    yield context
    context.close()


@pytest.fixture
def tab(browser_context):
    """A new page on the app: a new websocket, so a new Streamlit session with fresh state."""
    page = b.new_tab(browser_context)
    yield page
    page.close()


@pytest.fixture(autouse=True)
def _server_log_on_failure(request):
    """When a browser test fails, print the tail of the server's log with the failure."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "app_server" in request.fixturenames:
        server = request.getfixturevalue("app_server")
        print(f"\n--- streamlit server log (tail) ---\n{server.log_tail(3000)}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
