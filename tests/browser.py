"""Driving the app in a real Chromium: start the server, open pages, read what a user would see.

Used by tests/conftest.py (fixtures) and tests/test_browser.py. Every wait here is on a condition
(server health, the script's run state, a chart's svg, the URL); none is a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"

SERVER_START_TIMEOUT = 60  # seconds for /_stcore/health to answer
FIRST_RUN_TIMEOUT = 120_000  # ms: the first run of a fresh server imports torch and builds a model
RUN_TIMEOUT = 90_000  # ms for any later script run (or page switch) to finish
DRAW_TIMEOUT = 90_000  # ms for lazily loaded elements and charts to draw once the script has finished
VIEWPORT = {"width": 1400, "height": 1000}
MAX_SCREENSHOT_HEIGHT = 16_000  # px: keeps a runaway page from making a gigantic PNG

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]

APP = "[data-testid=stApp]"
READY = f"{APP}[data-test-script-state=notRunning]"
TEXT_AREA = "[data-testid=stSidebar] .st-key-text textarea"  # "Input text": its key is the URL's `text`
EXCEPTION = "[data-testid=stException]"
MAIN = "[data-testid=stMain]"
PLOTLY = "[data-testid=stPlotlyChart]"
GRAPHVIZ = "[data-testid=stGraphVizChart]"
# Streamlit draws an element as a skeleton until the JS chunk for its kind has loaded.
SKELETON = "[data-testid=stSkeleton]"


def truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# --- pages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppPage:
    name: str  # "Home", "Tokens", ...
    url_path: str  # "/", "/Tokens", ...
    file: Path

    @property
    def source(self) -> str:
        return self.file.read_text(encoding="utf-8")

    def link(self, query: str = "") -> str:
        return self.url_path + (f"?{query}" if query else "")


def discover_pages(root: Path = ROOT) -> list[AppPage]:
    """Home plus every page in pages/, named and ordered exactly as Streamlit does it."""
    from streamlit.source_util import page_icon_and_name, page_sort_key

    files = sorted(
        (p for p in (root / "pages").glob("*.py") if not p.name.startswith(".") and p.name != "__init__.py"),
        key=page_sort_key,
    )
    return [AppPage("Home", "/", root / "app.py")] + [
        AppPage(page_icon_and_name(f)[1], "/" + page_icon_and_name(f)[1], f) for f in files
    ]


# --- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AppServer:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as error:
            return f"(no server log: {error})"

    def stop(self) -> None:
        """End the server and anything it started (it runs in its own process group)."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_server(root: Path = ROOT, log_path: Path | None = None, timeout: float = SERVER_START_TIMEOUT) -> AppServer:
    """`streamlit run app.py` on a free port; returns once /_stcore/health answers ok.

    Raises RuntimeError with the server's log if it exits or stays unhealthy for `timeout` s.
    """
    port = free_port()
    log_path = log_path or ARTIFACTS / f"streamlit-server-{port}.log"  # one per server: runs may overlap
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--logger.enableRich", "false",  # plain tracebacks in the log
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    server = AppServer(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"streamlit exited with code {process.returncode} before answering /_stcore/health.\n"
                f"Command: {' '.join(command)}\n--- server log ---\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.status == 200 and response.read().strip() == b"ok":
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"streamlit did not answer /_stcore/health within {timeout:.0f} s.\n"
                f"Command: {' '.join(command)}\n--- server log ---\n{server.log_tail()}"
            )
        time.sleep(0.2)  # polling interval, not a wait for something that has a signal


# --- the browser -------------------------------------------------------------------------------


def chromium_path() -> str | None:
    """Debian's Chromium (Playwright must never download a browser of its own here).

    GPTVIZ_CHROMIUM, when set, is the only candidate.
    """
    override = os.environ.get("GPTVIZ_CHROMIUM")
    candidates = [override] if override else [shutil.which("chromium"), "/usr/bin/chromium"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def launch_chromium(playwright, path: str):
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)


# Counts every script run the page starts, so a test can tell "a new run has finished" from
# "the old run is still the last one" even when the state attribute is notRunning both times.
_RUN_COUNTER = """
(() => {
  window.__gptvizRuns = 0;
  const observer = new MutationObserver((mutations) => {
    for (const m of mutations) {
      if (m.target.getAttribute('data-test-script-state') === 'running') window.__gptvizRuns += 1;
    }
  });
  const attach = () => observer.observe(document.documentElement, {
    subtree: true, attributes: true, attributeFilter: ['data-test-script-state'] });
  if (document.documentElement) attach(); else document.addEventListener('DOMContentLoaded', attach);
})();
"""


# Records [page time, n] each time the Generate page's row of generated tokens changes
# (data-gv-generated = tokens generated so far; the page redraws it after each step).
GENERATED_OBSERVER = """
(() => {
  window.__generated = [];
  let last = null, lastNode = null;
  new MutationObserver(() => {
    const e = document.querySelector('[data-gv-generated]');
    const v = e ? Number(e.getAttribute('data-gv-generated')) : null;
    if (v !== last || e !== lastNode) { last = v; lastNode = e; window.__generated.push([performance.now(), v]); }
  }).observe(document, {subtree: true, childList: true, attributes: true});
})();
"""


def new_context(browser, base_url: str):
    """A browser context on the app: relative URLs resolve against it, every page counts its runs.

    Share one per test session: its HTTP cache keeps Streamlit's ~150 lazily loaded JS chunks,
    while each page (tab) still opens its own websocket and so its own Streamlit session.
    """
    context = browser.new_context(base_url=base_url, viewport=VIEWPORT)
    context.add_init_script(_RUN_COUNTER)
    context.set_default_timeout(RUN_TIMEOUT)
    return context


def new_tab(context):
    """A new page (a new Streamlit session) whose errors are being collected."""
    page = context.new_page()
    watch(page)
    return page


# --- what went wrong in the browser ----------------------------------------------------------------

# Offline, the browser fails to reach hosts on the internet (Material icon SVGs on fonts.gstatic.com,
# Streamlit's metrics config): that is the sandbox, not the app.
_OFFLINE = ("ERR_NAME_NOT_RESOLVED", "ERR_INTERNET_DISCONNECTED", "ERR_NETWORK_ACCESS_DENIED", "ERR_ADDRESS_UNREACHABLE")
# Opened straight at /Tokens, the frontend first probes /Tokens/_stcore/{health,host-config} to find
# the app's base path; those two 404s are expected and it then falls back to /.
_BASE_PATH_PROBE = re.compile(r"^/[^/]+/_stcore/(health|host-config)$")


def is_expected_noise(text: str, url: str) -> bool:
    parts = urlsplit(url or "")
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if any(code in text for code in _OFFLINE) and parts.hostname and not local:
        return True
    if "404" in text and local and _BASE_PATH_PROBE.match(parts.path):
        return True
    return False


@dataclass
class BrowserLog:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def mark(self) -> tuple[int, int]:
        return len(self.console_errors), len(self.page_errors)

    def since(self, mark: tuple[int, int]) -> list[str]:
        return self.console_errors[mark[0]:] + [f"uncaught: {e}" for e in self.page_errors[mark[1]:]]


_LOGS: dict[int, BrowserLog] = {}


def watch(page) -> BrowserLog:
    """Collect the page's console errors and uncaught exceptions (once per page)."""
    key = id(page)
    if key in _LOGS:
        return _LOGS[key]
    log = _LOGS[key] = BrowserLog()

    def on_console(message):
        if message.type != "error":
            return
        url = (message.location or {}).get("url", "")
        entry = f"{message.text} ({url})" if url else message.text
        (log.ignored if is_expected_noise(message.text, url) else log.console_errors).append(entry)

    page.on("console", on_console)
    page.on("pageerror", lambda error: log.page_errors.append(str(error)))
    page.on("close", lambda _: _LOGS.pop(key, None))
    return log


# --- opening a page and reading it ----------------------------------------------------------------


@dataclass
class View:
    """What one finished script run left on screen."""

    url: str
    exceptions: list[str]  # tracebacks Streamlit drew in the page
    errors: list[str]  # console errors and uncaught JS errors that are not offline noise
    plotly_total: int
    plotly_drawn: int  # charts whose svg plotly has drawn
    graphviz_total: int
    graphviz_drawn: int
    loading: int  # elements still drawn as skeletons (their JS never loaded)
    main_text: str  # the main area's visible text

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.url).query, keep_blank_values=True).items()}

    @property
    def charts_drawn(self) -> int:
        return self.plotly_drawn + self.graphviz_drawn

    def problems(self) -> list[str]:
        """Everything a user would call broken: tracebacks, JS errors, charts that never drew."""
        found = [f"exception shown: {e[:800]}" for e in self.exceptions]
        found += [f"browser error: {e[:400]}" for e in self.errors]
        if self.plotly_drawn < self.plotly_total:
            found.append(f"only {self.plotly_drawn} of {self.plotly_total} plotly charts drew")
        if self.graphviz_drawn < self.graphviz_total:
            found.append(f"only {self.graphviz_drawn} of {self.graphviz_total} graphviz diagrams drew")
        if self.loading:
            found.append(f"{self.loading} elements never finished loading (still skeletons)")
        return found


_ALL_DRAWN = """
([plotly, graphviz, skeleton]) => {
  const undrawn = (sel, svg) => [...document.querySelectorAll(sel)].filter(el => !el.querySelector(svg));
  return document.querySelectorAll(skeleton).length === 0
    && undrawn(plotly, 'svg.main-svg').length === 0 && undrawn(graphviz, 'svg').length === 0;
}
"""


def wait_for_charts(page, timeout: float = DRAW_TIMEOUT) -> None:
    """Give every element of the finished run the chance to draw: Streamlit loads the code for
    each kind of element lazily (a skeleton stands in meanwhile), and charts render asynchronously.

    A chart that never draws is not raised here: the View reports it, so the test says which.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(_ALL_DRAWN, arg=[PLOTLY, GRAPHVIZ, SKELETON], timeout=timeout)
    except PlaywrightTimeout:
        pass


def read_view(page, log: BrowserLog, mark) -> View:
    counts = page.evaluate(
        """([plotly, graphviz, skeleton]) => ({
            plotly_total: document.querySelectorAll(plotly).length,
            plotly_drawn: [...document.querySelectorAll(plotly)].filter(el => el.querySelector('svg.main-svg')).length,
            graphviz_total: document.querySelectorAll(graphviz).length,
            graphviz_drawn: [...document.querySelectorAll(graphviz)].filter(el => el.querySelector('svg')).length,
            loading: document.querySelectorAll(skeleton).length,
        })""",
        [PLOTLY, GRAPHVIZ, SKELETON],
    )
    return View(
        url=page.url,
        exceptions=page.locator(EXCEPTION).all_inner_texts(),
        errors=log.since(mark),
        main_text=page.locator(MAIN).inner_text(),
        **counts,
    )


def wait_until_ran(page, timeout: float = RUN_TIMEOUT) -> None:
    """The app's script has run at least once on this document and is not running now."""
    page.locator(TEXT_AREA).wait_for(state="attached", timeout=timeout)
    page.locator(READY).wait_for(state="attached", timeout=timeout)
    wait_for_charts(page)


def open_page(page, path_and_query: str, timeout: float = FIRST_RUN_TIMEOUT) -> View:
    """Load a URL (relative to the app) as a user opening a link, and read the finished page."""
    log = watch(page)
    mark = log.mark()
    page.goto(path_and_query)
    wait_until_ran(page, timeout)
    return read_view(page, log, mark)


def runs_started(page) -> int:
    return page.evaluate("() => window.__gptvizRuns || 0")


def wait_for_new_run(page, runs_before: int, text_before: str, timeout: float = RUN_TIMEOUT) -> None:
    """Wait until a run started after `runs_before` (or the page changed) and has finished.

    A widget change does not flip the state attribute until the server answers, so "notRunning"
    alone could still be the previous run: the run counter (or changed content, should a very
    short run never paint its "running" state) tells the new run apart.
    """
    page.wait_for_function(
        """([ready, main, before, textBefore]) => {
            if (!document.querySelector(ready)) return false;
            if ((window.__gptvizRuns || 0) > before) return true;
            const el = document.querySelector(main);
            return !!el && el.innerText !== textBefore;
        }""",
        arg=[READY, MAIN, runs_before, text_before],
        timeout=timeout,
    )
    wait_for_charts(page)


def enter_text(page, text: str, timeout: float = RUN_TIMEOUT) -> View:
    """Type `text` into the sidebar's "Input text" and submit it as a user does (Ctrl+Enter).

    st.text_area sends its value on Ctrl+Enter (or when it loses focus); typing alone does not rerun.
    Waits for the URL to carry the new text and for the rerun it caused to finish.
    """
    log = watch(page)
    mark = log.mark()
    runs_before = runs_started(page)
    text_before = page.locator(MAIN).inner_text()
    box = page.locator(TEXT_AREA)
    box.fill(text)
    box.press("Control+Enter")
    page.wait_for_function(
        "(want) => new URLSearchParams(window.location.search).get('text') === want", arg=text, timeout=timeout
    )
    wait_for_new_run(page, runs_before, text_before, timeout)
    return read_view(page, log, mark)


def page_link(page, name: str, scope: str = "[data-testid=stSidebar]"):
    """The link to page `name` (e.g. "Tokens") inside `scope`; st.page_link writes relative hrefs."""
    return page.locator(
        f'{scope} a[href="{name}"], {scope} a[href^="{name}?"], {scope} a[href$="/{name}"], {scope} a[href*="/{name}?"]'
    ).first


def follow_link(page, name: str, scope: str = "[data-testid=stSidebar]") -> View:
    """Click the link to page `name` as a user does; wait for the new page's run to finish."""
    log = watch(page)
    mark = log.mark()
    runs_before = runs_started(page)
    text_before = page.locator(MAIN).inner_text()
    page_link(page, name, scope).click()
    page.wait_for_function("(name) => window.location.pathname.endsWith('/' + name)", arg=name)
    wait_for_new_run(page, runs_before, text_before)
    return read_view(page, log, mark)


def widget_value(page, key: str) -> str | None:
    """The value the widget with this `key` shows, or None when the page has no such widget.

    Streamlit tags a keyed widget's container with the class st-key-<key>; text areas, text and
    number inputs, select boxes (their combobox) and sliders (their range input) hold the value
    in an input or textarea inside it.
    """
    field = page.locator(f".st-key-{key} textarea, .st-key-{key} input")
    if field.count() == 0:
        return None
    return field.first.input_value(timeout=5_000)


def screenshot(page, name: str) -> Path:
    """A full-length PNG of the page in artifacts/screenshots/.

    Streamlit scrolls inside its main area, so Playwright's full_page sees only the viewport:
    grow the viewport to the content's height for the shot, then put it back.
    """
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    size = page.viewport_size or VIEWPORT
    tall = page.evaluate(
        """(sels) => Math.max(window.innerHeight, ...sels.map(s => document.querySelector(s))
                .filter(Boolean).map(el => el.scrollHeight))""",
        [MAIN, "[data-testid=stSidebarContent]"],
    )
    height = min(int(tall), MAX_SCREENSHOT_HEIGHT)
    try:
        if height > size["height"]:
            page.set_viewport_size({"width": size["width"], "height": height})
            wait_for_charts(page)  # plotly redraws on resize
        page.screenshot(path=str(path), full_page=True, animations="disabled")
    finally:
        page.set_viewport_size(size)
    return path


def describe(view: View) -> str:
    return json.dumps(
        {"url": view.url, "problems": view.problems(), "main_text": view.main_text[:1500]}, indent=1, ensure_ascii=False
    )
