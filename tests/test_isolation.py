"""Many users at once: nothing leaks between sessions through the shared models, caches or RNGs,
and the caches stay bounded however many distinct inputs arrive.

A built model and a trace are shared by every session. A session that mutated one, toggled a
model's mode, or drew from the global torch RNG would change what another session sees. Here
browser sessions use one server at the same moment, and threads hammer the shared trace cache
with interleaved requests; each must see exactly what the same inputs give alone.
"""

from __future__ import annotations

import ast
import gc
import json
import math
import re
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import browser as b
from apptest_helpers import ROOT, errors, run_page
from gptviz import tokenizer, ui
from gptviz.build import GPT, SKELETON, ModelSpec, build_model
from gptviz.config import PRESETS, config_key, estimate_bytes
from gptviz.trace import trace

TINY_NAME = "tiny (teaching)"
TINY = PRESETS[TINY_NAME]


def cache_of(cached_function):
    """Streamlit's cache object behind an st.cache_resource function (streamlit 1.67 internals)."""
    return cached_function._info.get_function_cache(cached_function._function_key)


def cache_size(cached_function) -> int:
    return len(cache_of(cached_function)._mem_cache)


def is_st_cached(fn) -> bool:
    return hasattr(fn, "_info") and hasattr(fn, "_function_key")


def clear_shared_caches() -> None:
    """Empty every cache a session shares: st.cache_resource functions and the byte LRUs."""
    for name in ("get_model", "_cached_trace", "next_logits"):
        fn = getattr(ui, name, None)
        if fn is not None and is_st_cached(fn):
            fn.clear()
    for name in ("TRACES", "MODELS", "PROMPTS"):
        if hasattr(ui, name):
            getattr(ui, name).clear()


def trace_cache():
    """(entries now, max entries, max bytes) of the trace cache, whichever kind ui uses."""
    if hasattr(ui, "TRACES"):
        return len(ui.TRACES), math.inf, ui.TRACES.max_bytes
    return cache_size(ui._cached_trace), cache_of(ui._cached_trace).max_entries, None


# --- sessions side by side, on the real server ----------------------------------------------------
#
# Real concurrency goes through the real server: AppTests in threads race on the harness's own
# process-wide state (a per-run reset of PagesManager.uses_pages_directory, a per-run ScriptCache
# compiling in parallel, which CPython 3.11.7's AST validator does not survive), none of which
# a server has. So sessions here are browser tabs in separate contexts on `streamlit run`, all
# loading and retyping at once; what each shows is compared with the same inputs run alone.

TINY_LINK = {"preset": TINY_NAME}
SESSIONS = [  # (query params, the texts it types); two pairs share a model with dropout on and off
    ({"model": "gpt", "seed": "1", **TINY_LINK}, ["The cat sat on", "A dog ran in the park"]),
    ({"model": "gpt", "seed": "1", "dropout": "false", **TINY_LINK}, ["The cat sat on", "A dog ran in the park"]),
    ({"model": "gpt", "seed": "2", **TINY_LINK}, ["Colourless green ideas sleep", "Ideas sleep furiously"]),
    ({"model": "skeleton", "seed": "3", **TINY_LINK}, ["Tokens become vectors here", "Vectors become logits"]),
    ({"model": "mix", "parts": "attention", "seed": "4", **TINY_LINK}, ["Blocks change the stream", "Streams"]),
    ({"model": "skeleton", "seed": "3", "dropout": "false", **TINY_LINK}, ["Tokens become vectors here", "Hi"]),
]
NEXT_ID = re.compile(r"\(id (\d+), probability")  # "... → ␣a (id 257, probability 0.00002 ...)", one per batch row
PREDICTIONS = "pages/5_Predictions.py"


def next_ids(text: str) -> list[int]:
    return [int(i) for i in NEXT_ID.findall(text)]


@pytest.fixture(scope="module")
def alone():
    """What each session's inputs show when run alone, one after the other (AppTest, no browser)."""
    clear_shared_caches()
    shown = {}
    for params, texts in SESSIONS:
        for text in texts:
            at = run_page(PREDICTIONS, text=text, text2="", **params)
            assert errors(at) == [], errors(at)
            shown[(json.dumps(params, sort_keys=True), text)] = next_ids(
                "\n".join(str(m.value) for m in at.get("markdown")))
    return shown


def test_the_sessions_differ_so_a_leak_would_show(alone):
    assert all(ids for ids in alone.values()), alone
    firsts = {json.dumps(p, sort_keys=True): alone[(json.dumps(p, sort_keys=True), t[0])] for p, t in SESSIONS}
    assert len({tuple(v) for v in firsts.values()}) >= 4, f"too many sessions show the same token: {firsts}"


@pytest.mark.browser
def test_browser_sessions_at_once_each_see_what_their_inputs_show_alone(chromium, app_server, alone):
    """Six tabs in separate contexts open their links at the same moment, then all retype at once:
    each shows the next token its own inputs give alone, and no traceback."""
    from urllib.parse import urlencode

    contexts = [b.new_context(chromium, app_server.url) for _ in SESSIONS]
    try:
        tabs = [b.new_tab(context) for context in contexts]
        for tab, (params, texts) in zip(tabs, SESSIONS):  # start every load before waiting for any
            tab.goto("/Predictions?" + urlencode({**params, "text2": "", "text": texts[0]}), wait_until="commit")
        for round_ in range(2):
            for tab in tabs:
                b.wait_until_ran(tab, b.FIRST_RUN_TIMEOUT)
            for tab, (params, texts) in zip(tabs, SESSIONS):
                view = b.read_view(tab, b.watch(tab), (0, 0))
                assert view.exceptions == [], b.describe(view)
                want = alone[(json.dumps(params, sort_keys=True), texts[round_])]
                assert next_ids(view.main_text) == want, (
                    f"{params} with {texts[round_]!r} shows {next_ids(view.main_text)} alongside the other "
                    f"sessions, {want} alone"
                )
            if round_ == 0:  # everyone retypes at once: fill and submit in every tab, then wait for all
                marks = [(b.runs_started(tab), tab.locator(b.MAIN).inner_text()) for tab in tabs]
                for tab, (_, texts) in zip(tabs, SESSIONS):
                    box = tab.get_by_role("textbox", name="Input text")
                    box.fill(texts[1])
                    box.press("Control+Enter")
                for tab, (runs, before) in zip(tabs, marks):
                    b.wait_for_new_run(tab, runs, before)
    finally:
        for context in contexts:
            context.close()


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
    assert any(name == "next_logits" for _, name, _ in found), "the scan found no caches: it is broken"
    unbounded = [f"{file}:{name}" for file, name, kw in found
                 if "max_entries" not in kw or (isinstance(kw["max_entries"], ast.Constant) and kw["max_entries"].value is None)]
    assert unbounded == [], f"caches without max_entries: {unbounded}"


def test_model_cache_never_holds_more_than_its_bound(monkeypatch):
    """Models are kept within a byte budget (GPTVIZ_MODEL_CACHE_MB) that two 124M GPTModels exceed;
    here the shared cache's budget is lowered to 3 tiny models' worth, so the test stays small."""
    assert ui.MODELS.max_bytes < 2 * estimate_bytes(PRESETS["gpt2-small (124M)"]), "two 124M GPTModels stay cached"
    clear_shared_caches()
    size = ui._model_bytes(ui.get_model(ModelSpec(SKELETON, config_key(TINY), seed=0)))
    monkeypatch.setattr(ui.MODELS, "max_bytes", 3 * size)
    for seed in range(1, 8):
        ui.get_model(ModelSpec(SKELETON, config_key(TINY), seed=seed))
        assert ui.MODELS.nbytes <= 3 * size
    assert len(ui.MODELS) == 3, "the cache keeps fewer models than fit its budget"
    clear_shared_caches()


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


def test_kept_prompts_stay_under_their_bounds(monkeypatch):
    """The Generate page keeps recent prompts' keys and values for every session: however many
    distinct prompts arrive, they stay within GPTVIZ_PROMPT_CACHE_MB and the entry bound."""
    clear_shared_caches()
    spec = ModelSpec("GPTModel", config_key(TINY), seed=1)

    def prompts(n, offset=0):
        for i in range(n):
            ui.logits_after(spec)(tuple((offset + i * 31 + j) % 50257 for j in range(TINY["context_length"])))

    prompts(ui.PROMPTS.max_entries + 10)  # the tiny model's prompts are small: the entry bound holds
    assert len(ui.PROMPTS) == ui.PROMPTS.max_entries
    per_prompt = ui.PROMPTS.nbytes // len(ui.PROMPTS)
    clear_shared_caches()
    monkeypatch.setattr(ui.PROMPTS, "max_bytes", 5 * per_prompt)
    prompts(20, offset=7)
    assert len(ui.PROMPTS) == 5 and ui.PROMPTS.nbytes <= 5 * per_prompt
    clear_shared_caches()
    assert len(ui.PROMPTS) == 0


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
