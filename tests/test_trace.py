"""gptviz.trace: every intermediate a page shows, by name, with its shape.

What a learner would check: the names in the trace are the ones the module docstring
promises (and that the UI shows), the numbers are the model's own (the logits are what
`model(ids)` returns; the seed's printed logits come back when dropout is reproduced
through the trace's own generator), the pieces add up (embeddings = tok_emb + pos_emb,
resid_mid = input + att.out, ...), and attention is causal. What a maintainer would check:
a trace never mutates the shared model or touches the global RNG, and many threads can
trace one model at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gptviz.build import GPT, SKELETON, ModelSpec, build_model
from gptviz.config import GPT_CONFIG_124M, PRESETS, config_key
from gptviz.models import GPTModel
from gptviz.tokenizer import encode
from gptviz.trace import Trace, trace

SEED_BATCH = [[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]]

# The seed's printed DummyGPTModel logits (first and last three columns); see test_models.
SEED_DUMMY_LOGITS = np.array(
    [
        [
            [-1.2034, 0.3201, -0.7130, -1.5548, -0.2390, -0.4667],
            [-0.1192, 0.4539, -0.4432, 0.2392, 1.3469, 1.2430],
            [0.5307, 1.6720, -0.4695, 1.1966, 0.0111, 0.5835],
            [0.0139, 1.6754, -0.3388, 1.1586, -0.0435, -1.0400],
        ],
        [
            [-1.0908, 0.1798, -0.9484, -1.6047, 0.2439, -0.4530],
            [-0.7860, 0.5581, -0.0610, 0.4835, -0.0077, 1.6621],
            [0.3567, 1.2698, -0.6398, -0.0162, -0.1296, 0.3717],
            [-0.2407, -0.7349, -0.5102, 2.0057, -0.3694, 0.1814],
        ],
    ]
)
# The course's printed GPTModel logits (chapter 4, section 4.6).
BOOK_GPT_LOGITS = np.array(
    [
        [
            [0.3613, 0.4222, -0.0711, 0.3483, 0.4661, -0.2838],
            [-0.1792, -0.5660, -0.9485, 0.0477, 0.5181, -0.3168],
            [0.7120, 0.0332, 0.1085, 0.1018, -0.4327, -0.2553],
            [-1.0076, 0.3418, -0.1190, 0.7195, 0.4023, 0.0532],
        ],
        [
            [-0.2564, 0.0900, 0.0335, 0.2659, 0.4454, -0.6806],
            [0.1230, 0.3653, -0.2074, 0.7705, 0.2710, 0.2246],
            [1.0558, 1.0318, -0.2800, 0.6936, 0.3205, -0.3178],
            [-0.1565, 0.3926, 0.3288, 1.2630, -0.1858, 0.0388],
        ],
    ]
)
# One unit in the last printed (4th) decimal: the seed's BLAS rounds 1.67545009 down.
PRINT_TOLERANCE = 1e-4

TINY = {
    "vocab_size": 50257,  # GPT-2's, so any text the tokenizer makes can be traced
    "context_length": 16,
    "emb_dim": 16,
    "n_heads": 4,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": True,
}
B, T, D, H, V = 2, 5, TINY["emb_dim"], TINY["n_heads"], TINY["vocab_size"]

TOP = ["tok_emb", "pos_emb", "embeddings", "drop_emb"]
END = ["final_norm", "logits"]
# Recorded by every real TransformerBlock, whatever sits in its slots.
BLOCK = ["input", "norm1", "att.out", "resid_mid", "norm2", "ff.out", "output"]
ATTENTION = ["att.scores", "att.weights", "att.context"]
FEED_FORWARD = ["ff.hidden"]


def expected_names(n_layers, block):
    return set(TOP + END + [f"trf_blocks.{i}.{name}" for i in range(n_layers) for name in block])


def printed_columns(logits: np.ndarray) -> np.ndarray:
    return np.concatenate([logits[..., :3], logits[..., -3:]], axis=-1)


def ids_for(batch=B, length=T, seed=0):
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed)).numpy()


@pytest.fixture(scope="module")
def tiny_gpt():
    return build_model(ModelSpec(kind=GPT, config=config_key(TINY), seed=1))


@pytest.fixture(scope="module")
def tiny_skeleton():
    return build_model(ModelSpec(kind=SKELETON, config=config_key(TINY), seed=1))


# --- Names, shapes, types ------------------------------------------------------------------


def _check_shapes(tr: Trace, cfg, batch, length):
    d, h, v = cfg["emb_dim"], cfg["n_heads"], cfg["vocab_size"]
    for name in tr.names():
        array = tr[name]
        assert array.dtype == np.float32, name
        assert not array.flags.writeable, name
        with pytest.raises(ValueError):
            array[(0,) * array.ndim] = 1.0  # read-only: a cached trace cannot be changed
        if name == "pos_emb":
            assert array.shape == (length, d)
        elif name.endswith(("att.scores", "att.weights")):
            assert array.shape == (batch, h, length, length), name
        elif name.endswith("ff.hidden"):
            assert array.shape == (batch, length, 4 * d), name
        elif name == "logits":
            assert array.shape == (batch, length, v)
        else:
            assert array.shape == (batch, length, d), name


def test_skeleton_trace_names_and_shapes(tiny_skeleton):
    """The seed's skeleton: embeddings, blocks that pass x through, the output head."""
    tr = trace(tiny_skeleton.model, ids_for())
    assert set(tr.names()) == expected_names(TINY["n_layers"], ["input", "output"])
    _check_shapes(tr, TINY, B, T)
    assert tr.token_ids.dtype == np.int64 and tr.token_ids.shape == (B, T)


def test_full_model_trace_has_every_documented_name(tiny_gpt):
    tr = trace(tiny_gpt.model, ids_for())
    assert set(tr.names()) == expected_names(TINY["n_layers"], BLOCK + ATTENTION + FEED_FORWARD)


def test_full_model_trace_shapes(tiny_gpt):
    tr = trace(tiny_gpt.model, ids_for())
    documented_except_hidden = expected_names(TINY["n_layers"], BLOCK + ATTENTION)
    assert documented_except_hidden <= set(tr.names())
    assert len(tr.names()) == len(documented_except_hidden) + TINY["n_layers"]  # + the hidden layer
    _check_shapes(tr, TINY, B, T)
    hidden = [n for n in tr.names() if n.endswith("hidden")]
    assert all(tr[n].shape == (B, T, 4 * D) for n in hidden)


@pytest.mark.parametrize(
    "parts, block",
    [
        ((), BLOCK),
        (("attention",), BLOCK + ATTENTION),
        (("layer_norm",), BLOCK),
        (("attention", "layer_norm"), BLOCK + ATTENTION),
    ],
    ids=["none", "attention", "layer_norm", "attention+layer_norm"],
)
def test_mix_trace_names(parts, block):
    """A placeholder records nothing of its own: no att.scores without real attention."""
    built = build_model(ModelSpec(kind=GPT, config=config_key(TINY), parts=frozenset(parts), seed=1))
    tr = trace(built.model, ids_for())
    assert set(tr.names()) == expected_names(TINY["n_layers"], block)
    _check_shapes(tr, TINY, B, T)


def test_a_single_sequence_is_a_batch_of_one(tiny_gpt):
    ids = encode("Every effort moves you")
    tr = trace(tiny_gpt.model, ids)
    assert tr.token_ids.tolist() == [ids]
    assert tr["logits"].shape == (1, 4, V)


@pytest.mark.parametrize("bad", [[], [[]], [[[1, 2]]]])
def test_empty_or_three_dimensional_ids_are_refused(tiny_gpt, bad):
    with pytest.raises(ValueError, match="token_ids"):
        trace(tiny_gpt.model, np.array(bad, dtype=np.int64))


# --- The numbers are the model's own ----------------------------------------------------------


@pytest.mark.parametrize("kind", [SKELETON, GPT])
def test_trace_logits_are_the_models_logits(kind, tiny_gpt, tiny_skeleton):
    model = (tiny_gpt if kind == GPT else tiny_skeleton).model
    ids = ids_for(batch=3, length=TINY["context_length"], seed=4)
    with torch.no_grad():
        expected = model(torch.as_tensor(ids)).numpy()
    np.testing.assert_allclose(trace(model, ids)["logits"], expected, atol=1e-6, rtol=0)


def test_the_pieces_add_up(tiny_gpt):
    """Recompute each step from the previous one, independently of the model's code."""
    model = tiny_gpt.model
    tr = trace(model, ids_for())
    np.testing.assert_allclose(tr["embeddings"], tr["tok_emb"] + tr["pos_emb"], atol=1e-6)
    np.testing.assert_array_equal(tr["drop_emb"], tr["embeddings"])  # no dropout in a plain trace
    np.testing.assert_array_equal(tr["trf_blocks.0.input"], tr["drop_emb"])
    head_dim = D // H
    for i, block in enumerate(model.trf_blocks):
        name = f"trf_blocks.{i}."
        x = torch.from_numpy(tr[name + "input"].copy())
        norm1 = F.layer_norm(x, (D,), block.norm1.scale, block.norm1.shift, eps=1e-5)
        np.testing.assert_allclose(tr[name + "norm1"], norm1.numpy(), atol=1e-5)
        q = block.att.W_query(norm1).view(B, T, H, head_dim).transpose(1, 2)
        k = block.att.W_key(norm1).view(B, T, H, head_dim).transpose(1, 2)
        np.testing.assert_allclose(tr[name + "att.scores"], (q @ k.transpose(2, 3)).numpy(), atol=1e-5)
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        weights = torch.softmax((q @ k.transpose(2, 3)).masked_fill(causal, float("-inf")) / head_dim**0.5, dim=-1)
        np.testing.assert_allclose(tr[name + "att.weights"], weights.numpy(), atol=1e-6)
        np.testing.assert_allclose(tr[name + "att.out"], block.att.out_proj(torch.from_numpy(tr[name + "att.context"].copy())).numpy(), atol=1e-5)
        np.testing.assert_allclose(tr[name + "resid_mid"], tr[name + "input"] + tr[name + "att.out"], atol=1e-6)
        np.testing.assert_allclose(tr[name + "output"], tr[name + "resid_mid"] + tr[name + "ff.out"], atol=1e-6)
        if i + 1 < len(model.trf_blocks):
            np.testing.assert_array_equal(tr[f"trf_blocks.{i + 1}.input"], tr[name + "output"])
    last = torch.from_numpy(tr[f"trf_blocks.{len(model.trf_blocks) - 1}.output"].copy())
    final = F.layer_norm(last, (D,), model.final_norm.scale, model.final_norm.shift, eps=1e-5)
    np.testing.assert_allclose(tr["final_norm"], final.numpy(), atol=1e-5)
    np.testing.assert_allclose(tr["logits"], (final @ model.out_head.weight.T).numpy(), atol=1e-5)


def test_skeleton_trace_reproduces_the_seeds_printed_logits():
    """The app's skeleton on the seed's batch shows the seed's numbers, dropout included:
    the model is built as the seed builds it, and the trace draws the dropout mask from its
    own generator, started where the seed's first mask is drawn."""
    built = build_model(ModelSpec(kind=SKELETON, config=config_key(GPT_CONFIG_124M), seed=123))
    tr = trace(built.model, SEED_BATCH, keep=("logits",), dropout_generator=built.dropout_generator())
    assert tr.names() == ["logits"]
    assert tr["logits"].shape == (2, 4, 50257)
    np.testing.assert_allclose(printed_columns(tr["logits"]), SEED_DUMMY_LOGITS, atol=PRINT_TOLERANCE, rtol=0)
    # Without dropout the numbers are different: the seed's numbers do include its mask.
    plain = trace(built.model, SEED_BATCH, keep=("logits",))
    assert np.abs(printed_columns(plain["logits"]) - SEED_DUMMY_LOGITS).max() > 0.01


def test_full_model_trace_reproduces_the_books_printed_logits():
    built = build_model(ModelSpec(kind=GPT, config=config_key(GPT_CONFIG_124M), seed=123))
    tr = trace(built.model, SEED_BATCH, keep=("logits",), dropout_generator=built.dropout_generator())
    np.testing.assert_allclose(printed_columns(tr["logits"]), BOOK_GPT_LOGITS, atol=PRINT_TOLERANCE, rtol=0)


@pytest.mark.parametrize("parts", [None, ("attention",), ("feed_forward", "layer_norm")])
def test_trace_dropout_is_exactly_the_courses_nn_dropout(parts):
    """Bit for bit what a train-mode forward pass under the same seed computes, for every
    dropout site: embeddings, attention weights, both shortcuts."""
    cfg = {**TINY, "drop_rate": 0.3}
    spec_parts = {} if parts is None else {"parts": frozenset(parts)}
    built = build_model(ModelSpec(kind=GPT, config=config_key(cfg), seed=123, **spec_parts))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        reference = GPTModel(cfg) if parts is None else GPTModel(cfg, parts=parts)
        with torch.no_grad():
            expected = reference(torch.tensor(SEED_BATCH)).numpy()
    tr = trace(built.model, SEED_BATCH, dropout_generator=built.dropout_generator())
    np.testing.assert_array_equal(tr["logits"], expected)


def test_dropout_masks_differ_between_generators_but_repeat_for_the_same_seed(tiny_gpt):
    model = tiny_gpt.model
    one = trace(model, ids_for(), dropout_generator=torch.Generator().manual_seed(1))
    again = trace(model, ids_for(), dropout_generator=torch.Generator().manual_seed(1))
    other = trace(model, ids_for(), dropout_generator=torch.Generator().manual_seed(2))
    np.testing.assert_array_equal(one["logits"], again["logits"])
    assert not np.allclose(one["logits"], other["logits"])
    # The attention weights are recorded before their dropout: rows still sum to one.
    np.testing.assert_allclose(one["trf_blocks.0.att.weights"].sum(-1), 1.0, atol=1e-5)


# --- Attention is causal ------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(text=st.text(min_size=1, max_size=60))
def test_attention_never_looks_ahead_and_rows_sum_to_one(tiny_gpt, text):
    ids = encode(text)[: TINY["context_length"]]
    if not ids:
        return
    tr = trace(tiny_gpt.model, ids, keep=("*.att.weights",))
    n = len(ids)
    above = np.triu(np.ones((n, n), dtype=bool), k=1)
    for i in range(TINY["n_layers"]):
        weights = tr[f"trf_blocks.{i}.att.weights"]
        assert weights.shape == (1, H, n, n)
        assert np.all(weights[..., above] == 0.0)
        assert np.all(weights >= 0)
        np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(weights[..., 0, 0], 1.0, atol=1e-6)  # the first token sees only itself


# --- keep ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keep, expected",
    [
        (("logits",), {"logits"}),
        (
            ("trf_blocks.1.att.*", "logits"),
            {"trf_blocks.1.att.scores", "trf_blocks.1.att.weights", "trf_blocks.1.att.context", "trf_blocks.1.att.out", "logits"},
        ),
        (["*.att.weights"], {"trf_blocks.0.att.weights", "trf_blocks.1.att.weights"}),
        (("*_emb",), {"tok_emb", "pos_emb", "drop_emb"}),
        (("no such name",), set()),
        ((), set()),
    ],
)
def test_keep_patterns_choose_what_is_recorded(tiny_gpt, keep, expected):
    tr = trace(tiny_gpt.model, ids_for(), keep=keep)
    assert set(tr.names()) == expected


def test_kept_values_equal_the_full_traces(tiny_gpt):
    full = trace(tiny_gpt.model, ids_for())
    part = trace(tiny_gpt.model, ids_for(), keep=("trf_blocks.1.*",))
    assert part.names() and all(n.startswith("trf_blocks.1.") for n in part.names())
    for name in part.names():
        np.testing.assert_array_equal(part[name], full[name])


# --- A shared model stays untouched --------------------------------------------------------------


def _hooks(model):
    return [
        (name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
        for name, m in model.named_modules()
    ]


@pytest.mark.parametrize("training", [False, True])
def test_trace_leaves_model_and_global_rng_untouched(training):
    torch.manual_seed(5)
    model = GPTModel(TINY).train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hooks(model)
    rng = torch.get_rng_state()
    for generator in (None, torch.Generator().manual_seed(3)):
        trace(model, ids_for(), dropout_generator=generator)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.training == training for m in model.modules())
    assert _hooks(model) == hooks
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_a_train_mode_model_is_traced_without_dropout_unless_asked():
    """Dropout in a trace comes only from its generator, whatever mode the model is in."""
    torch.manual_seed(5)
    model = GPTModel(TINY).train()
    with torch.no_grad():
        expected = model.eval()(torch.as_tensor(ids_for())).numpy()
    model.train()
    np.testing.assert_allclose(trace(model, ids_for())["logits"], expected, atol=1e-6, rtol=0)


def test_many_threads_tracing_one_model_get_what_they_get_alone():
    built = build_model(ModelSpec(kind=GPT, config=config_key({**TINY, "drop_rate": 0.2}), seed=9))
    model = built.model
    jobs = [(ids_for(batch=1 + i % 2, length=3 + i, seed=i), i) for i in range(8)]

    def run(job):
        ids, seed = job
        generator = torch.Generator().manual_seed(seed) if seed % 2 else built.dropout_generator()
        return trace(model, ids, dropout_generator=generator)

    alone = [run(job) for job in jobs]
    barrier = threading.Barrier(len(jobs))

    def run_together(job):
        barrier.wait()
        return run(job)

    for _ in range(3):
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            together = list(pool.map(run_together, jobs))
        for a, b in zip(alone, together):
            assert a.names() == b.names()
            np.testing.assert_array_equal(a.token_ids, b.token_ids)
            for name in a.names():
                np.testing.assert_allclose(b[name], a[name], atol=1e-6, rtol=0, err_msg=name)


def test_tiny_preset_traces_any_text():
    """The app's tiny preset keeps GPT-2's vocabulary, so every token id has an embedding."""
    built = build_model(ModelSpec(kind=GPT, config=config_key(PRESETS["tiny (teaching)"]), seed=123))
    ids = encode("zebra 🦓 日本 <|endoftext|> ☃")
    assert max(ids) == 50256
    tr = trace(built.model, ids, keep=("logits",))
    assert tr["logits"].shape == (1, len(ids), 50257)


def test_forward_names_list_what_a_full_trace_records_in_order(tiny_skeleton, tiny_gpt):
    """trace stops after the last name asked for; that needs the exact recording order."""
    from gptviz.models import GPTModel
    from gptviz.trace import forward_names

    models = [tiny_skeleton.model, tiny_gpt.model]
    models += [GPTModel(TINY, parts).eval() for parts in [(), ("attention",), ("feed_forward", "layer_norm")]]
    for model in models:
        assert forward_names(model) == trace(model, ids_for()).names()


def test_a_trace_of_early_names_stops_early_with_the_same_values(tiny_gpt):
    full = trace(tiny_gpt.model, ids_for())
    early = trace(tiny_gpt.model, ids_for(), keep=("embeddings", "trf_blocks.0.att.*"))
    assert early.names() == ["embeddings", "trf_blocks.0.att.scores", "trf_blocks.0.att.weights",
                             "trf_blocks.0.att.context", "trf_blocks.0.att.out"]
    for name in early.names():
        np.testing.assert_array_equal(early[name], full[name])
    assert trace(tiny_gpt.model, ids_for(), keep=("no such name",)).names() == []
