"""scripts/serve.py, the README's start command: `streamlit run app.py` plus a warm-up thread
that does the first visitor's imports and model build in advance, into the caches pages use."""

from __future__ import annotations

import logging
import sys
import time

import pytest
from apptest_helpers import ROOT, errors, run_page

from gptviz import ui

sys.path.insert(0, str(ROOT / "scripts"))
import serve  # noqa: E402


@pytest.mark.parametrize("choice, params", [("skeleton", {}), ("gpt", {"model": "gpt"}), ("mix", {"model": "mix"})])
def test_default_spec_is_the_model_a_page_builds(choice, params):
    ui.MODELS.clear()
    at = run_page("pages/2_Embeddings.py", **params)  # a link with only the model chosen
    assert errors(at) == []
    assert ui.default_spec(choice) in ui.MODELS  # what the warm-up builds is what the page then finds


def test_warm_up_builds_into_the_pages_cache_and_skips_unknown_names(caplog):
    caplog.set_level(logging.INFO, logger=serve.log.name)
    ui.MODELS.clear()
    serve.warm_up(["skeleton", "pretrained", "no-such-model"])
    assert ui.default_spec("skeleton") in ui.MODELS and len(ui.MODELS) == 1
    assert "'pretrained' is not a model to build" in caplog.text and "'no-such-model'" in caplog.text
    assert "warm-up done" in caplog.text


def test_the_readme_launcher_serves_the_app_and_warms_up(app_server):
    """The session's server (tests/conftest.py) runs scripts/serve.py, as the README says."""
    deadline = time.monotonic() + 120
    while "warm-up done" not in app_server.log_tail(100_000):
        assert time.monotonic() < deadline, app_server.log_tail()
        assert "warm-up failed" not in app_server.log_tail(100_000), app_server.log_tail()
        time.sleep(0.5)
