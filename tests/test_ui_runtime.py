"""What the shared UI module does for every rerun behind the scenes: a trace computed in the
background while the page draws, and the imports' objects kept out of the garbage collector's walk."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from apptest_helpers import errors, run_page
from gptviz import trace, ui
from gptviz.build import GPT, ModelSpec, build_model
from gptviz.config import PRESETS, config_key

TINY = PRESETS["tiny (teaching)"]


def inputs_for(ids, seed=7) -> ui.Inputs:
    spec = ModelSpec(GPT, config_key(TINY), seed=seed)
    return ui.Inputs("t", "", "gpt", dict(TINY), spec, token_ids=(tuple(ids),), dropout=True)


@pytest.fixture
def fresh_traces(monkeypatch):
    monkeypatch.setattr(ui, "TRACES", ui.ByteLRU(64 * 2**20, size_of=ui.TRACES.size_of))


def test_start_trace_gives_the_trace_a_direct_forward_pass_gives(fresh_traces):
    inputs = inputs_for([5, 6, 7, 8])
    pending = ui.start_trace(inputs, keep=("trf_blocks.*.output", "final_norm"))
    got = pending.result(timeout=60)
    built = build_model(inputs.spec)  # built afresh, outside every cache
    want = trace(built.model, [[5, 6, 7, 8]], keep=("trf_blocks.*.output", "final_norm"),
                 dropout_generator=built.dropout_generator())
    assert got.names() == want.names()
    for name in want.names():
        np.testing.assert_array_equal(got[name], want[name])


def test_start_trace_runs_off_the_page_thread_and_lands_in_the_shared_cache(fresh_traces, monkeypatch):
    inputs = inputs_for([9, 10, 11])
    seen = {}
    original = ui.get_trace

    def recording(inp, keep=None):
        seen["thread"] = threading.current_thread().name
        return original(inp, keep)

    monkeypatch.setattr(ui, "get_trace", recording)
    first = ui.start_trace(inputs, keep=("logits",)).result(timeout=60)
    monkeypatch.setattr(ui, "get_trace", original)
    assert seen["thread"].startswith("gptviz-trace")
    again = ui.start_trace(inputs, keep=("logits",))
    assert again.done() and again.result() is first  # a hit: no second forward pass


def test_a_failed_trace_raises_in_the_page_that_asks_for_it(fresh_traces):
    inputs = inputs_for([TINY["vocab_size"] + 5])  # an id the model has no row for
    with pytest.raises(ValueError, match="token ids must be in"):
        ui.start_trace(inputs).result(timeout=60)


def test_a_page_run_freezes_the_imported_objects():
    at = run_page("pages/1_Tokens.py")
    assert not errors(at)
    # torch, streamlit, pandas and plotly's objects are out of the collector's walk ...
    assert gc.get_freeze_count() > 100_000
    at.run()  # the first run imported more after setup (lazily loaded modules): frozen at this one
    frozen = gc.get_freeze_count()
    at.run()
    # ... and a rerun that imports nothing new freezes nothing more (its own objects stay collectable).
    assert gc.get_freeze_count() <= frozen  # fewer: frozen objects are still freed when unreferenced
