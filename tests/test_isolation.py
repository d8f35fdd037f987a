"""Many users at once: nothing leaks between sessions through the shared models, caches or RNGs,
and the caches stay bounded however many distinct inputs arrive.

A built model and a trace are shared by every session (st.cache_resource). A session that
mutated one, toggled a model's mode, or drew from the global torch RNG would change what
another session sees. These tests run sessions side by side and require each to show exactly
what the same inputs show alone.
"""

from __future__ import annotations

import ast
import gc
import json
import math
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apptest_helpers import ROOT, charts, errors, run_page
from gptviz import tokenizer, ui
from gptviz.build import GPT, SKELETON, ModelSpec, build_model
from gptviz.config import PRESETS, config_key
from gptviz.trace import trace

TINY_NAME = "tiny (teaching)"
TINY = PRESETS[TINY_NAME]
SESSION_TIMEOUT = 240  # s for one AppTest run in a thread, however loaded the machine is


def cache_of(cached_function):
    """Streamlit's cache object behind an st.cache_resource function (streamlit 1.67 internals)."""
    return cached_function._info.get_function_cache(cached_function._function_key)


def cache_size(cached_function) -> int:
    return len(cache_of(cached_function)._mem_cache)


def is_st_cached(fn) -> bool:
    return hasattr(fn, "_info") and hasattr(fn, "_function_key")


def clear_shared_caches() -> None:
    """Empty every cache a session shares: st.cache_resource functions and the traces' byte LRU."""
    for name in ("get_model", "_cached_trace", "next_logits"):
        fn = getattr(ui, name, None)
        if fn is not None and is_st_cached(fn):
            fn.clear()
    if hasattr(ui, "TRACES"):
        ui.TRACES.clear()


def trace_cache():
    """(entries now, max entries, max bytes) of the trace cache, whichever kind ui uses."""
    if hasattr(ui, "TRACES"):
        return len(ui.TRACES), math.inf, ui.TRACES.max_bytes
    return cache_size(ui._cached_trace), cache_of(ui._cached_trace).max_entries, None


# --- sessions side by side -----------------------------------------------------------------------

# Different pages, models, seeds, texts and dropout; two pairs share a model with different
# dropout, so a generator shared by mistake would show.
SESSIONS = [
    ("pages/5_Predictions.py", dict(model="gpt", seed="1", text="The cat sat on", text2="A dog ran in")),
    ("pages/5_Predictions.py", dict(model="gpt", seed="1", text="The cat sat on", text2="A dog ran in",
                                    dropout="false")),
    ("pages/5_Predictions.py", dict(model="skeleton", seed="2", text="Every effort moves you")),
    ("pages/4_Attention.py", dict(model="gpt", seed="1", text="Colourless green ideas sleep", layer="1", head="2")),
    ("pages/4_Attention.py", dict(model="mix", parts="attention", seed="3", text="Colourless green ideas sleep")),
    ("pages/2_Embeddings.py", dict(model="skeleton", seed="4", text="Tokens become vectors here", text2="")),
    ("pages/3_Model.py", dict(model="gpt", seed="5", text="Blocks change the stream", dropout="false")),
    ("pages/1_Tokens.py", dict(text="Nothing but tokens 🙂", text2="")),
]
if (ROOT / "pages" / "6_Generate.py").exists():
    SESSIONS.append(("pages/6_Generate.py", dict(model="gpt", seed="2", text="Once upon a", gen_temperature="1.0",
                                                 gen_seed="7", gen_steps="6")))


def open_session(page: str, params: dict):
    return run_page(page, preset=TINY_NAME, **params)


def fingerprint(at) -> dict:
    """Everything a user reads off the page: text, code (idx_next, printed logits) and every chart's data."""
    return {
        "errors": errors(at),
        "code": [c.value for c in at.get("code")],
        "markdown": [str(m.value) for m in at.get("markdown")],
        "captions": [str(c.value) for c in at.get("caption")],
        "charts": [json.dumps(c["data"], sort_keys=True) for c in charts(at)],
    }


def run_concurrently(jobs) -> list:
    """Start every job at once (a barrier), each in its own thread; bounded by SESSION_TIMEOUT."""
    barrier = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def work(i, job):
        barrier.wait(timeout=60)
        try:
            results[i] = job()
        except BaseException as error:  # reported below with the session it came from
            results[i] = error

    threads = [threading.Thread(target=work, args=(i, job), daemon=True) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SESSION_TIMEOUT)
    stuck = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not stuck, f"sessions {stuck} did not finish within {SESSION_TIMEOUT} s"
    return results


@pytest.fixture(scope="module")
def solo():
    """Each session alone, one after the other."""
    clear_shared_caches()
    return [fingerprint(open_session(page, params)) for page, params in SESSIONS]


def test_sessions_differ_so_a_leak_would_show(solo):
    assert all(f["errors"] == [] for f in solo), [f["errors"] for f in solo]
    assert solo[0] != solo[1], "dropout on and off gave the same Predictions page: the comparison proves nothing"
    assert len({json.dumps(f, sort_keys=True) for f in solo}) == len(solo)


@pytest.mark.parametrize("caches", ["cold", "warm"])
def test_sessions_side_by_side_see_what_they_see_alone(solo, caches):
    """All sessions at once (models built concurrently when cold) equal the same sessions run alone."""
    if caches == "cold":
        clear_shared_caches()
    jobs = [lambda page=page, params=params: fingerprint(open_session(page, params)) for page, params in SESSIONS]
    together = run_concurrently(jobs)
    for (page, params), alone, shared in zip(SESSIONS, solo, together):
        if isinstance(shared, BaseException):
            raise AssertionError(f"{page} {params} raised while running alongside the others") from shared
        assert shared["errors"] == [], f"{page} {params}: {shared['errors']}"
        for part in alone:
            assert shared[part] == alone[part], f"{page} {params}: its {part} differ when other sessions run at once"


# --- the shared cache, request by request --------------------------------------------------------

SPECS = [
    ModelSpec(SKELETON, config_key(TINY), seed=1),
    ModelSpec(GPT, config_key(TINY), seed=1),
    ModelSpec(GPT, config_key(TINY), seed=2),
    ModelSpec(GPT, config_key(TINY), parts=frozenset({"attention", "layer_norm"}), seed=3),
]
TEXTS = [("Every effort moves you", "Every day holds a"), ("Hello, world",), ("One two three four five six",)]
IDS = [tuple(tuple(tokenizer.encode(t)) for t in texts) for texts in TEXTS]
KEEPS = [("logits",), ("tok_emb", "drop_emb"), ("trf_blocks.1.att.*",), None]

_REFERENCES: dict = {}
_FRESH_MODELS: dict = {}


def fresh_model(spec):
    if spec not in _FRESH_MODELS:
        _FRESH_MODELS[spec] = build_model(spec)
    return _FRESH_MODELS[spec]


def reference(request) -> dict:
    """The trace computed outside the app's caches, on a model built for this test alone."""
    if request not in _REFERENCES:
        spec_i, ids_i, dropout, keep_i = request
        built = fresh_model(SPECS[spec_i])
        generator = built.dropout_generator() if dropout else None
        _REFERENCES[request] = trace(built.model, IDS[ids_i], keep=KEEPS[keep_i], dropout_generator=generator).values
    return _REFERENCES[request]


def ask(request):
    spec_i, ids_i, dropout, keep_i = request
    return ui._cached_trace(SPECS[spec_i], IDS[ids_i], dropout, KEEPS[keep_i])


def assert_same_values(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), what
    for name in want:
        assert np.array_equal(got[name], want[name]), f"{what}: {name} differs"
        assert not got[name].flags.writeable, f"{what}: {name} is writable, so one session could change another's"


REQUESTS = st.tuples(
    st.integers(0, len(SPECS) - 1), st.integers(0, len(IDS) - 1), st.booleans(), st.integers(0, len(KEEPS) - 1)
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=REQUESTS, others=st.lists(REQUESTS, min_size=1, max_size=6), workers=st.integers(1, 4))
def test_interleaved_requests_do_not_change_a_cached_trace(a, others, workers):
    """Ask for A, then for B1..Bn from several threads at once, then for A again: A never changes.

    Every answer equals a trace computed outside the cache; the global RNG is left as it was.
    """
    rng_before = torch.get_rng_state()
    first = ask(a)
    snapshot = {name: value.copy() for name, value in first.values.items()}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        answers = list(pool.map(ask, [*others, a]))
    for request, answer in zip([*others, a], answers):
        assert_same_values(answer.values, reference(request), f"request {request} among {others}")
    again = ask(a)
    assert_same_values(again.values, snapshot, f"A={a} after {others}")
    assert torch.equal(torch.get_rng_state(), rng_before), "a cached trace or model build used the global RNG"


def test_shared_models_are_never_changed_by_use():
    """After many traces with and without dropout, a cached model's weights and mode are as built."""
    clear_shared_caches()
    spec = SPECS[1]
    built = ui.get_model(spec)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda i: ui._cached_trace(spec, IDS[i % len(IDS)], i % 2 == 0, None), range(12)))
    fresh = fresh_model(spec).model.state_dict()
    for name, tensor in built.model.state_dict().items():
        assert torch.equal(tensor, fresh[name]), f"{name} changed while serving traces"
    assert not built.model.training and not any(m.training for m in built.model.modules())
    assert not any(p.requires_grad for p in built.model.parameters())


# --- bounded caches --------------------------------------------------------------------------------


def cached_functions_in_source() -> list[tuple[str, str, dict]]:
    """Every st.cache_resource / st.cache_data decorator in the app: (file, function, keywords)."""
    found = []
    files = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "gptviz").rglob("*.py"))]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if isinstance(target, ast.Attribute) and target.attr in ("cache_resource", "cache_data"):
                    keywords = {k.arg: k.value for k in deco.keywords} if isinstance(deco, ast.Call) else {}
                    found.append((str(path.relative_to(ROOT)), node.name, keywords))
    return found


def test_every_cache_in_the_app_has_a_bound():
    """Both decorators are unbounded by default: each use must say max_entries."""
    found = cached_functions_in_source()
    assert any(name == "get_model" for _, name, _ in found), "the scan found no caches: it is broken"
    unbounded = [f"{file}:{name}" for file, name, kw in found
                 if "max_entries" not in kw or (isinstance(kw["max_entries"], ast.Constant) and kw["max_entries"].value is None)]
    assert unbounded == [], f"caches without max_entries: {unbounded}"


def test_model_cache_never_holds_more_than_its_max_entries():
    clear_shared_caches()
    bound = cache_of(ui.get_model).max_entries
    assert math.isfinite(bound), "get_model keeps every model it ever built"
    for seed in range(int(bound) + 4):
        ui.get_model(ModelSpec(SKELETON, config_key(TINY), seed=seed))
        assert cache_size(ui.get_model) <= bound


def test_trace_caches_stay_within_their_bounds():
    """Many distinct inputs: the trace cache stays within its entries or bytes, next_logits within its entries."""
    clear_shared_caches()
    spec = ModelSpec(SKELETON, config_key(TINY), seed=1)
    _, max_entries, max_bytes = trace_cache()
    assert math.isfinite(max_entries) or max_bytes is not None, "the trace cache has no bound at all"
    for i in range(int(min(max_entries, 40)) + 10):
        ui._cached_trace(spec, ((i % 50000, 1 + i // 50000),), False, ("logits",))
        assert trace_cache()[0] <= max_entries
    if max_bytes is not None:
        assert ui.TRACES.nbytes <= max_bytes
    if hasattr(ui, "next_logits"):  # the Generate page's per-prefix logits
        bound = cache_of(ui.next_logits).max_entries
        assert math.isfinite(bound)
        for i in range(int(bound) + 10):
            ui.next_logits(spec, (i % 50000, 1 + i // 50000))
        assert cache_size(ui.next_logits) <= bound
    clear_shared_caches()


def test_trace_cache_memory_stays_under_a_byte_budget():
    """However many distinct texts arrive, the traces kept alive stay under a memory budget.

    Counted from outside, whatever the cache's kind: weak references to every array handed out,
    then what is still alive (held by the cache) once this test drops its own references.
    The budget is the cache's own (GPTVIZ_TRACE_CACHE_MB), or 512 MiB for a cache without one;
    the Predictions page's logits for 2 x 1024 tokens are 412 MB, so 32 entries could be 13 GB.
    """
    _, _, budget = trace_cache()
    budget = budget or 512 * 2**20
    clear_shared_caches()
    gc.collect()
    spec = ModelSpec(SKELETON, config_key(TINY), seed=1)
    per_entry = 2 * TINY["context_length"] * TINY["vocab_size"] * 4  # a full tiny batch's logits: 25.7 MB
    refs = []
    for i in range(budget // per_entry + 6):  # bounded: just past the budget
        row = tuple((i * 7 + j) % 50257 for j in range(TINY["context_length"]))
        values = ui._cached_trace(spec, (row, row[::-1]), False, ("logits",)).values
        refs += [weakref.ref(v) for v in values.values()]
        del values
    gc.collect()
    alive = sum(r().nbytes for r in refs if r() is not None)
    clear_shared_caches()
    assert alive > 0, "nothing was cached at all: the measurement is broken"
    assert alive <= budget, f"{alive / 2**20:.0f} MiB of traces still cached, over the {budget / 2**20:.0f} MiB budget"
