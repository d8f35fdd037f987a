"""The only module that imports streamlit: page setup, the shared sidebar, cached loaders.

Every page starts with `inputs = ui.setup("Title")`. That draws the sidebar (each control
bound to a URL query parameter, so any view is a shareable link), validates the config,
tokenizes the text and returns an `Inputs`. Pages then ask `get_trace(inputs, keep=...)`
for the intermediates they show (or `start_trace`, to draw other things meanwhile); models
and traces are built once and shared through bounded caches. Pages never compute with torch themselves.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import math
import os
import sys
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch
from streamlit.runtime.scriptrunner import get_script_run_ctx

from . import init_cache, tokenizer
from .build import GPT, PRETRAINED, SKELETON, BuiltModel, ModelSpec, build_model
from .config import (
    DEFAULT_PRESET,
    GPT2_VOCAB_SIZE,
    PRESETS,
    ConfigError,
    available_memory_bytes,
    config_key,
    estimate_bytes,
    validate_config,
)
from .lru import ByteLRU
from .models import ALL_PARTS, PARTS
from .settings import env_int, env_mib
from .stepper import PrefixLogits, PromptCaches
from .trace import Trace, trace

DEFAULT_TEXT = "Every effort moves you"
DEFAULT_TEXT2 = "Every day holds a"  # the seed's second row: together they form its batch
DEFAULT_SEED = 123
# Tokens traced per text, whatever context_length a config or link asks for: the logits
# alone are tokens x 50257 floats (4 GB for 20,000 tokens). GPTVIZ_MAX_TOKENS changes it.
MAX_TOKENS = env_int("GPTVIZ_MAX_TOKENS", 1024)
MAX_TEXT_CHARS = 20_000  # far beyond any context length; keeps a URL from carrying megabytes
# Models larger than this are refused before anything is allocated (Streamlit Community
# Cloud gives an app 690 MB to 2.7 GB). Set GPTVIZ_MAX_MODEL_MB to change it.
MAX_MODEL_BYTES = env_mib("GPTVIZ_MAX_MODEL_MB", 1600)

# One torch thread per computation. The server shares 2 cores between every session's
# reruns (and, in a classroom demo, the projector's browser); with one intra-op thread per
# core, torch's threads and the Python thread that builds the figures fight for them and a
# warm rerun took 2-4x longer (benchmarks/README.md). GPTVIZ_TORCH_THREADS changes it.
TORCH_THREADS = env_int("GPTVIZ_TORCH_THREADS", 1)


def _use_torch_threads() -> None:
    """Apply TORCH_THREADS to the calling thread. The setting is per OS thread (OpenMP's and
    MKL's thread counts are thread-local; a new thread starts at one per core), and Streamlit
    runs every rerun in a new thread: without this, only the thread that first imported this
    module used one, and every later rerun and trace worker multiplied on two."""
    torch.set_num_threads(TORCH_THREADS)


_use_torch_threads()

MODEL_CHOICES = {
    "skeleton": "DummyGPTModel: the seed's skeleton",
    "gpt": "GPTModel: real transformer blocks",
    "mix": "GPTModel: a mix of real parts and placeholders",
    "pretrained": "GPTModel with trained GPT-2 weights",
}
WEIGHT_SOURCES = {
    "directory": "a directory on this server",
    "upload": "an uploaded .safetensors file",
    "download": "download GPT-2 (needs internet)",
}
MAX_UPLOAD_BYTES = env_mib("GPTVIZ_MAX_UPLOAD_MB", 700)
UPLOAD_DIR = Path(tempfile.gettempdir()) / "gptviz-uploads"
PAGES = (
    ("app.py", "Home", ":material/home:"),
    ("pages/1_Tokens.py", "Tokens", ":material/text_fields:"),
    ("pages/2_Embeddings.py", "Embeddings", ":material/grid_on:"),
    ("pages/3_Model.py", "Model", ":material/account_tree:"),
    ("pages/4_Attention.py", "Attention", ":material/visibility:"),
    ("pages/5_Predictions.py", "Predictions", ":material/insights:"),
    ("pages/6_Generate.py", "Generate", ":material/edit_note:"),
)
PART_LABELS = {"attention": "multi-head attention", "feed_forward": "feed-forward", "layer_norm": "layer norms"}
INT_FIELDS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")


@dataclass(frozen=True)
class Inputs:
    """Everything the sidebar decided, ready for a page."""

    text: str
    text2: str
    model_choice: str
    cfg: dict
    spec: ModelSpec | None  # None when the config is invalid
    problems: tuple = ()  # why the config is invalid
    dropout: bool = True
    token_ids: tuple = ()  # the batch fed to the model: B rows of T ids
    notes: tuple = ()  # what was changed about the input, for the learner to see
    texts: tuple = field(default=())  # the text of each batch row (after truncation)

    @property
    def batch_size(self) -> int:
        return len(self.token_ids)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids[0]) if self.token_ids else 0


# --- cached loaders ------------------------------------------------------------------


def _model_bytes(built: BuiltModel) -> int:
    """What a built model holds: its parameters and buffers (a tied matrix counted once)."""
    return sum(t.nelement() * t.element_size() for t in [*built.model.parameters(), *built.model.buffers()])


def _expected_model_bytes(spec: ModelSpec) -> int | None:
    """A model's bytes before it is built: from its config, or its checkpoint's size on disk."""
    if spec.kind == PRETRAINED:
        path = Path(spec.weights)
        try:  # an fp32 GPT-2 checkpoint is about the size of the weights loaded from it
            return (path / "model.safetensors" if path.is_dir() else path).stat().st_size
        except (OSError, ValueError):  # missing, or not a path (a NUL byte): load_gpt2 says why
            return None
    try:
        return estimate_bytes(spec.cfg, spec.parts, placeholder_blocks=spec.kind == SKELETON)
    except (KeyError, TypeError, ValueError):  # an invalid config: build_model says what is wrong
        return None


# Built models, shared by every session, bounded in bytes (GPTVIZ_MODEL_CACHE_MB). Before a
# model is built, the least recently used ones go until it fits beside those kept, so a
# class switching models peaks at the bound, not at every model it visited. The default,
# 700 MiB, holds the largest 124M model, the GPTModel (634 MiB: 163M fp32 parameters and
# 12 MiB of causal masks), but nothing of that size beside it: even the 124M skeleton is
# 297 MiB (tok_emb and out_head, 50257 x 768 each), and a mix with real attention 418 MiB.
# Switching skeleton -> gpt -> mix -> skeleton -> gpt with 300-token inputs on the Model and
# Predictions pages (benchmarks/bench_model_switch.py) peaked at 1412-1418 MB of server RSS
# with 700 MiB and 1676-1811 MB with 1000 MiB, which keeps the skeleton beside the GPTModel.
# A model larger than the bound is still built, alone, and kept until the next miss.
MODEL_CACHE_BYTES = env_mib("GPTVIZ_MODEL_CACHE_MB", 700)
init_cache.max_bytes()  # read once at start too: a bad GPTVIZ_INIT_CACHE_MB stops the server, as the others do
MODELS = ByteLRU(MODEL_CACHE_BYTES, size_of=_model_bytes, keep_oversized=True)

try:  # glibc's; elsewhere (macOS, musl) there is nothing to call
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _malloc_trim = None


def _build(spec: ModelSpec) -> BuiltModel:
    """Build once the cache has made room, after handing the evicted models' memory back.

    A model's smaller matrices (2-9 MiB in the 124M blocks) come from malloc's heaps, which
    keep freed memory for reuse rather than return it: a server that had just evicted the
    124M GPTModel stayed at 984 MB of RSS until malloc_trim(0) brought it to 557 MB. An evicted
    model that is still being written to the init cache is only released when that write ends.
    """
    init_cache.wait_for_writes()
    if _malloc_trim is not None:
        _malloc_trim(0)
    return build_model(spec)


def get_model(spec: ModelSpec) -> BuiltModel:
    """The built model of spec, built once and shared by every page and session."""
    in_a_page = get_script_run_ctx(suppress_warning=True) is not None  # a spinner needs a page run (tests, scripts call this too)
    message = "Building the model (once; every page and visitor then shares it)..."
    with st.spinner(message) if in_a_page and spec not in MODELS else nullcontext():
        return MODELS.get(spec, lambda: _build(spec), size=_expected_model_bytes(spec))


# Shared by every session (a module outlives reruns). Set GPTVIZ_TRACE_CACHE_MB to change it.
TRACES = ByteLRU(
    max_bytes=env_mib("GPTVIZ_TRACE_CACHE_MB", 256),
    size_of=lambda t: sum(a.nbytes for a in t.values.values()),
)


def _trace_key(inputs: Inputs, keep) -> tuple:
    """What a trace is cached under: model, token ids, dropout and the names kept."""
    return inputs.spec, inputs.token_ids, inputs.dropout, None if keep is None else tuple(keep)


def _cached_trace(spec: ModelSpec, token_ids: tuple, dropout: bool, keep: tuple | None) -> Trace:
    def compute():
        built = get_model(spec)
        generator = built.dropout_generator() if dropout else None
        return trace(built.model, token_ids, keep=keep, dropout_generator=generator)

    return TRACES.get((spec, token_ids, dropout, keep), compute)


@st.cache_resource(max_entries=256, ttl=3600, show_spinner=False)
def next_logits(spec: ModelSpec, ids: tuple, _decoder: PrefixLogits | None = None):
    """The logits after a prefix (last position only, float32, read-only), cropped to the context.

    One entry per prefix, so the Generate page's sliders re-run only the sampling pipeline:
    about 200 kB each for GPT-2's vocabulary, so at most ~50 MB however it is used. A miss
    is computed by `_decoder` (see `logits_after`), which feeds the model only the tokens
    that its previous prefix lacks; it is not part of the cache key.
    """
    if _decoder is None:
        built = get_model(spec)
        _decoder = PrefixLogits(built.model, built.cfg["context_length"])
    logits = _decoder(ids)
    logits.setflags(write=False)
    return logits


# Keys and values of recent prompts (see stepper.PromptCaches): 32 tokens of the 124M GPT take
# 2.4 MB, 300 tokens 22 MB.
PROMPTS = PromptCaches(env_mib("GPTVIZ_PROMPT_CACHE_MB", 24))


def logits_after(spec: ModelSpec):
    """ids -> next-token logits for `stepper.walk`: cached per prefix for every session;
    misses extend one KV cache that lives for this rerun only, which starts from the keys and
    values of the longest start the prompt shares with a recent one (`PROMPTS`)."""
    built = get_model(spec)
    decoder = PrefixLogits(built.model, built.cfg["context_length"], prompts=PROMPTS, model_key=spec)
    return lambda ids: next_logits(spec, tuple(ids), decoder)


def get_trace(inputs: Inputs, keep=None) -> Trace:
    """The cached trace of the current batch; `keep` (glob patterns) limits what is stored.

    Arrays are read-only: a trace is shared by every session that asks for the same thing.
    """
    return _cached_trace(*_trace_key(inputs, keep))


# Traces computed while a page draws what does not depend on them (see start_trace). torch
# releases the GIL in its kernels, so the forward pass runs on one core while the page's
# Python runs on the other. A few workers: on 2 cores more would only take turns.
_TRACE_WORKERS = ThreadPoolExecutor(max_workers=env_int("GPTVIZ_TRACE_WORKERS", 2),
                                    thread_name_prefix="gptviz-trace", initializer=_use_torch_threads)


def start_trace(inputs: Inputs, keep=None) -> Future:
    """get_trace in the background: `.result()` is the Trace (or raises what get_trace raised).

    The model is fetched here, in the page's thread, so a build still shows its spinner; the
    forward pass then overlaps with everything the page draws before it asks for the result.
    A page stopped by a new keystroke leaves its trace to finish into the shared cache.
    """
    get_model(inputs.spec)
    if _trace_key(inputs, keep) in TRACES:
        done = Future()  # a hit costs nothing: no thread hop
        done.set_result(get_trace(inputs, keep))
        return done
    return _TRACE_WORKERS.submit(get_trace, inputs, keep)


# --- the sidebar -----------------------------------------------------------------------


def _reset_to_seed():
    for key in list(st.session_state):
        if key in ("text", "text2", "model", "preset", "parts", "seed", "dropout") or key.startswith("cfg_"):
            del st.session_state[key]


def _config_fields(preset_cfg: dict) -> dict:
    """Editable config fields. Empty means "the preset's value", so a link only carries overrides."""
    overrides = {}
    with st.sidebar.expander("Edit the config", expanded=False):
        st.caption("Empty fields keep the preset's value.")
        for key in INT_FIELDS:
            value = whole_number_input(
                st.number_input, key, key=f"cfg_{key}", min_value=1, max_value=10**7, value=None,
                placeholder=str(preset_cfg[key]),
            )
            if value is not None:
                overrides[key] = int(value)
        rate = clamped_widget(
            st.number_input, "drop_rate", key="cfg_drop_rate", min_value=0.0, max_value=1.0, value=None,
            step=0.05, format="%.2f", placeholder=str(preset_cfg["drop_rate"]),
        )
        if rate is not None:
            overrides["drop_rate"] = float(rate)
        bias = st.selectbox(
            "qkv_bias", ["preset", "True", "False"], key="cfg_qkv_bias", bind="query-params",
            help="Bias in the query, key and value projections (GPT-2's trained weights have it).",
        )
        if bias != "preset":
            overrides["qkv_bias"] = bias == "True"
    return overrides


def startup_weights_dir() -> str:
    """A checkpoint directory given at start-up: `streamlit run app.py -- --weights DIR`, or GPTVIZ_WEIGHTS_DIR."""
    args = sys.argv[1:]
    if "--weights" in args and args.index("--weights") + 1 < len(args):
        return args[args.index("--weights") + 1]
    return os.environ.get("GPTVIZ_WEIGHTS_DIR", "")


def _save_upload(upload) -> str:
    """Store an upload under its sha256, so the same file is one cache entry for everyone."""
    data = upload.getvalue()
    UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
    path = UPLOAD_DIR / f"{hashlib.sha256(data).hexdigest()}.safetensors"
    if not path.exists():
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(path)  # atomic: a concurrent reader never sees half a file
    return str(path)


def _download(size: str) -> None:
    """Fetch a published GPT-2 into the hub cache, with a progress bar; the path goes into the sidebar."""
    from .weights import WeightsError, download_gpt2

    bar = st.sidebar.progress(0.0, text=f"Downloading GPT-2 {size}...")
    try:
        # The hub reports progress from its own threads; only this thread may draw, so the
        # bar moves per file rather than per byte.
        path = download_gpt2(size)
    except WeightsError as error:
        st.session_state["download_error"] = str(error)
    else:
        st.session_state["weights_dir"] = str(path)
        st.session_state.pop("download_error", None)
    finally:
        bar.empty()


def _weights_source() -> tuple[str, str]:
    """Where trained weights come from; returns (path, problem)."""
    sb = st.sidebar
    source = sb.radio(
        "Weights from", list(WEIGHT_SOURCES), key="weights_from", bind="query-params", horizontal=True,
        help="; ".join(f"{k}: {v}" for k, v in WEIGHT_SOURCES.items()),
    )
    if source == "upload":
        upload = sb.file_uploader(
            "GPT-2 weights (.safetensors)", type=["safetensors"], key="weights_upload",
            help="Only safetensors: a pickle (.bin, .pt) can run code when loaded, so it is refused.",
        )
        if upload is None:
            return "", "Upload a GPT-2 .safetensors file in the sidebar (e.g. model.safetensors of gpt2)."
        if upload.size > MAX_UPLOAD_BYTES:
            return "", f"{upload.name} is {upload.size / 2**20:.0f} MiB; this server takes at most {MAX_UPLOAD_BYTES / 2**20:.0f} MiB."
        return _save_upload(upload), ""
    if source == "download":
        size = sb.selectbox("GPT-2 size", ["small", "medium", "large", "xl"], key="download_size")
        sb.button("Download", on_click=_download, args=(size,), width="stretch")
        if st.session_state.get("download_error"):
            return "", st.session_state["download_error"]
    path = sb.text_input(
        "Checkpoint directory (config.json + model.safetensors)", value=startup_weights_dir(),
        key="weights_dir", bind="query-params",
    )
    if not path:
        return "", "Give a checkpoint directory in the sidebar: one holding config.json and model.safetensors."
    return path, ""


def _sidebar():
    sb = st.sidebar
    text = sb.text_area(
        "Input text", value=DEFAULT_TEXT, max_chars=MAX_TEXT_CHARS, key="text", bind="query-params",
        help="Type anything; every page follows this text through the model.",
    )
    text2 = sb.text_input(
        "Second text (optional, makes a batch)", value=DEFAULT_TEXT2, max_chars=MAX_TEXT_CHARS, key="text2",
        bind="query-params", help="The seed stacks two texts into one batch with torch.stack. Clear it to use one.",
    )
    # No format_func on URL-bound choices: Streamlit writes the shown label into the URL,
    # so the options themselves are the short words a link carries (?model=gpt).
    model_choice = sb.selectbox("Model", list(MODEL_CHOICES), key="model", bind="query-params")
    sb.caption(MODEL_CHOICES.get(model_choice, ""))
    parts = ALL_PARTS
    weights, weights_problem = "", ""
    if model_choice == "pretrained":
        weights, weights_problem = _weights_source()
    if model_choice == "mix":
        chosen = sb.multiselect(
            "Real components (the rest are placeholders)", list(PARTS), default=["attention"],
            key="parts", bind="query-params", help=", ".join(f"{k}: {v}" for k, v in PART_LABELS.items()),
        )
        parts = frozenset(p for p in chosen if p in PARTS)
    cfg = PRESETS[DEFAULT_PRESET]
    if model_choice != "pretrained":  # a checkpoint brings its own config
        preset = sb.selectbox("Config preset", list(PRESETS), key="preset", bind="query-params")
        preset = preset if preset in PRESETS else DEFAULT_PRESET
        cfg = {**PRESETS[preset], **_config_fields(PRESETS[preset])}
    seed = whole_number_input(
        sb.number_input, "Seed (torch.manual_seed)", key="seed", min_value=0, max_value=2**31 - 1, value=DEFAULT_SEED,
    )
    dropout = sb.toggle(
        "Dropout active", value=True, key="dropout", bind="query-params",
        help="The seed never calls model.eval(), so its dropout is active: on reproduces its numbers.",
    )
    sb.button("Reset to the seed's example", on_click=_reset_to_seed, width="stretch")
    kind = {"skeleton": SKELETON, "pretrained": PRETRAINED}.get(model_choice, GPT)
    parts = parts if model_choice == "mix" else ALL_PARTS
    seed = int(seed if seed is not None else DEFAULT_SEED)
    return text or "", text2 or "", model_choice, cfg, kind, parts, seed, bool(dropout), weights, weights_problem


def _batch(text: str, text2: str, context_length: int):
    """Token ids of the batch and notes on anything changed to make it valid."""
    notes = []
    rows = [tokenizer.encode(text)]
    if text2.strip():
        rows.append(tokenizer.encode(text2))
    limit = min(context_length, MAX_TOKENS)
    why = (
        f"the model sees at most context_length = {context_length}" if limit == context_length
        else f"this server follows at most {limit} tokens per text (GPTVIZ_MAX_TOKENS)"
    )
    for i, ids in enumerate(rows):
        if len(ids) > limit:
            notes.append(f"Text {i + 1} has {len(ids)} tokens but {why}: only its first {limit} tokens are used.")
            rows[i] = ids[:limit]
    if len(rows) == 2 and len(rows[0]) != len(rows[1]):
        if rows[0]:  # an empty first text gets the page's "type some text", not a note on lengths
            notes.append(
                f"The two texts have {len(rows[0])} and {len(rows[1])} tokens. torch.stack needs rows of "
                "equal length (the course pads them in later chapters), so only the first text is used."
            )
        rows = rows[:1]
    rows = [r for r in rows if r]
    texts = tuple(tokenizer.decode(r) for r in rows)
    return tuple(tuple(r) for r in rows), tuple(notes), texts


FAVICON = str(Path(__file__).parent / "assets" / "favicon.png")  # local: a material icon would be fetched from a CDN


_modules_frozen = 0  # len(sys.modules) at the last gc.freeze()


def _freeze_long_lived_objects() -> None:
    """Take what the imports made out of the garbage collector's sight (gc.freeze()).

    torch, streamlit, pandas and plotly leave ~270,000 container objects behind, and a full
    collection walks all of them in 190-320 ms with the whole server stopped: 9 such pauses
    from a server's start through one Model page load and 6 retypes, measured (the per-rerun
    figures, protobufs and frames trigger them, often after the script, while it sends). Frozen objects
    are still freed when nothing refers to them; a cycle among them is never collected, so
    this runs only when new modules were imported (a page's first run in this process),
    before the page creates anything of its own.
    """
    global _modules_frozen
    if len(sys.modules) != _modules_frozen:
        gc.freeze()
        _modules_frozen = len(sys.modules)


def setup(title: str) -> Inputs:
    """Set up a page: config, the shared sidebar, and the validated inputs."""
    _freeze_long_lived_objects()
    _use_torch_threads()  # this rerun's thread
    st.set_page_config(page_title=f"{title} · gptviz", page_icon=FAVICON, layout="wide")
    _navigation()
    text, text2, model_choice, cfg, kind, parts, seed, dropout, weights, weights_problem = _sidebar()
    if kind == PRETRAINED:
        spec, cfg, problems = _pretrained(weights, weights_problem, seed)
    else:
        spec, problems = _random_init(cfg, kind, parts, seed)
    context = cfg["context_length"] if spec is not None else PRESETS[DEFAULT_PRESET]["context_length"]
    token_ids, notes, texts = _batch(text, text2, context)
    return Inputs(text, text2, model_choice, cfg, spec, problems, dropout, token_ids, notes, texts)


def _navigation() -> None:
    """Links to every page that keep the current view in the URL (the built-in menu is off)."""
    with st.sidebar:
        for page, label, icon in PAGES:
            page_link(page, label, icon)
        st.divider()


def _pretrained(weights: str, problem: str, seed: int):
    """The spec of a trained checkpoint, its config as read from the checkpoint, and problems."""
    from .weights import WeightsError

    cfg = PRESETS[DEFAULT_PRESET]
    if problem:
        return None, cfg, (problem,)
    spec = ModelSpec(kind=PRETRAINED, weights=weights, seed=seed, max_bytes=min(MAX_MODEL_BYTES, available_memory_bytes()))
    try:
        built = get_model(spec)
    except WeightsError as error:
        return None, cfg, (str(error),)
    return spec, built.cfg, ()


def _random_init(cfg: dict, kind: str, parts, seed: int):
    """The spec of a freshly initialised model, or the problems with its config."""
    try:
        validate_config(
            cfg,
            memory_budget=min(MAX_MODEL_BYTES, available_memory_bytes()),
            parts=parts,
            placeholder_blocks=kind == SKELETON,
        )
        if cfg["vocab_size"] < GPT2_VOCAB_SIZE:
            raise ConfigError([
                f"vocab_size must be at least {GPT2_VOCAB_SIZE}: the GPT-2 tokenizer produces ids up to "
                f"{GPT2_VOCAB_SIZE - 1}, and each needs a row in tok_emb"
            ])
        return ModelSpec(kind=kind, config=config_key(cfg), parts=parts, seed=seed), ()
    except ConfigError as error:
        return None, tuple(error.problems)


# --- messages pages share ---------------------------------------------------------------


def show_notes(inputs: Inputs) -> None:
    for note in inputs.notes:
        st.warning(note, icon=":material/content_cut:")


def require_model(inputs: Inputs) -> None:
    """Stop the page with an explanation when no model can be built from the config."""
    if inputs.problems and inputs.model_choice == "pretrained":
        st.error("No trained model is loaded:\n\n" + "\n".join(f"- {p}" for p in inputs.problems), icon=":material/error:")
        st.stop()
    if inputs.problems:
        st.error(
            "This config cannot make a model:\n\n" + "\n".join(f"- {p}" for p in inputs.problems)
            + "\n\nFix it in the sidebar under *Edit the config*, or press *Reset to the seed's example*.",
            icon=":material/error:",
        )
        st.stop()


def require_tokens(inputs: Inputs) -> None:
    """Stop the page with a hint when there is nothing to feed the model."""
    if not inputs.token_ids:
        st.info("Type some text in the sidebar: an empty text has no tokens to follow.", icon=":material/edit:")
        st.stop()


def require_real_attention(inputs: Inputs) -> None:
    if inputs.spec is None or inputs.spec.kind == SKELETON or "attention" not in inputs.spec.parts:
        st.info(
            "This model has no real attention: the seed's DummyTransformerBlock returns its input "
            "unchanged, so there are no scores or weights to show. Choose *GPTModel: real transformer "
            "blocks* (or a mix with attention) in the sidebar.",
            icon=":material/visibility_off:",
        )
        st.stop()


def seed_code(snippet: str, caption: str | None = None) -> None:
    """Show the lines of the seed's code that produced what the page shows."""
    if caption:
        st.caption(caption)
    st.code(snippet, language="python")


def plot(fig, key: str | None = None) -> None:
    """Draw a figure full width; every chart goes through here so settings stay in one place."""
    st.plotly_chart(fig, width="stretch", key=key, config={"displaylogo": False})


def lazy_tabs(labels: list[str], key: str):
    """Tabs of which only the selected one is computed and sent (check `tab.open`).

    A rerun builds the figures of one tab instead of all of them, on the server and in the
    browser. The choice is in the URL (`key`=label), so a shared link opens the same tab.
    """
    return st.tabs(labels, key=key, on_change="rerun", bind="query-params")


def page_link(page: str, label: str, icon: str | None = None) -> None:
    """A link to another page that keeps the current view (text, model, config) in its URL."""
    st.page_link(page, label=label, icon=icon, query_params=st.query_params.to_dict())


def snap_url_value(key: str, low, high, default, why: str | None = None) -> None:
    """Bring a link's out-of-range number to the nearest end of [low, high], with a note.

    Streamlit silently resets such a value to the widget's default (and an integer widget
    given `inf` raises); a link asking for k=99 means "as many as you can". A value that is
    not a number keeps the default, with a note. Call before the widget is created (its
    value then comes from session state). `default` None means "empty" (an override field).
    """
    if key in st.session_state:
        # A value remembered from before the range shrank (a shorter text, a smaller model).
        current = st.session_state[key]
        if isinstance(current, (int, float)) and not isinstance(current, bool) and not low <= current <= high:
            st.session_state[key] = type(low)(min(max(current, low), high))
        return
    raw = st.query_params.get(key)
    if raw is None:
        return
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    shown = "the preset's value" if default is None else f"{key} = {_plain(default)}"
    if math.isnan(value):
        st.warning(f"`{key}={raw}` in the link is not a number: showing {shown}.", icon=":material/link:")
        return
    if low <= value <= high:
        return
    snapped = low if value < low else high
    note = why or f"`{key}={raw}` in the link is outside {_plain(low)} to {_plain(high)}"
    st.warning(f"{note}: showing {key} = {_plain(snapped)}.", icon=":material/link:")
    st.session_state[key] = type(low)(snapped)


def _plain(number) -> str:
    """2147483647.0 -> "2147483647", 0.05 -> "0.05": numbers as a person writes them."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def clamped_widget(widget, label: str, key: str, min_value, max_value, value, **kwargs):
    """A numeric widget (st.slider, st.number_input, or a column's) bound to the URL, whose
    link value is snapped into range first."""
    snap_url_value(key, min_value, max_value, value)
    return widget(label, min_value=min_value, max_value=max_value, value=value, key=key, bind="query-params", **kwargs)


def whole_number_input(widget, label: str, key: str, min_value: int, max_value: int, value, **kwargs):
    """An integer number input bound to the URL that survives any link.

    Streamlit's integer number_input raises on `inf` or `1e400` in the URL before any range
    check; its float one falls back to the default. So the widget is a float shown as a
    whole number, and the value comes back as an int (or None when left empty). The format
    is "%.0f", not "%d": Streamlit logs a warning with a stack trace for every float shown
    with "%d", on every rerun.
    """
    result = clamped_widget(
        widget, label, key=key, min_value=float(min_value), max_value=float(max_value),
        value=None if value is None else float(value), step=1.0, format="%.0f", **kwargs,
    )
    return None if result is None else int(round(result))
