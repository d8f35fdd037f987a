"""What the shared UI module does for every rerun behind the scenes: a trace computed in the
background while the page draws, and the imports' objects kept out of the garbage collector's walk."""

from __future__ import annotations

import ctypes
import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

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


def _openmp_threads():
    """omp_get_max_threads() of the calling thread: torch's thread count is per OS thread."""
    lib = next(iter(sorted((Path(torch.__file__).parent / "lib").glob("libgomp*.so*"))), None)
    if lib is None:
        pytest.skip("this torch build does not bundle GNU OpenMP")
    return ctypes.CDLL(str(lib)).omp_get_max_threads


def in_new_thread(func):
    result = []
    thread = threading.Thread(target=lambda: result.append(func()))
    thread.start()
    thread.join()
    return result[0]


def test_every_thread_that_computes_uses_the_configured_torch_threads(monkeypatch):
    """A new OS thread starts at one OpenMP thread per core, and Streamlit runs each rerun in a new
    thread: the setting must be applied in each (a value no default has makes it visible)."""
    omp_max_threads = _openmp_threads()
    monkeypatch.setattr(ui, "TORCH_THREADS", 7)
    try:
        assert in_new_thread(omp_max_threads) != 7  # what a rerun thread had before

        def rerun_thread():
            ui._use_torch_threads()  # what ui.setup does first in every rerun
            return omp_max_threads()

        assert in_new_thread(rerun_thread) == 7
        with ThreadPoolExecutor(1, initializer=ui._use_torch_threads) as workers:
            assert workers.submit(omp_max_threads).result() == 7
        assert ui._TRACE_WORKERS._initializer is ui._use_torch_threads
    finally:
        monkeypatch.undo()
        ui._use_torch_threads()


def test_a_page_run_applies_the_torch_threads(monkeypatch):
    omp_max_threads = _openmp_threads()
    seen = []
    original = ui._use_torch_threads
    monkeypatch.setattr(ui, "_use_torch_threads", lambda: (original(), seen.append(omp_max_threads())))
    at = run_page("pages/1_Tokens.py")
    assert not errors(at)
    assert seen == [ui.TORCH_THREADS]
