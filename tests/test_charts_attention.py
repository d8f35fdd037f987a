"""The Attention page's builders: the course's arithmetic redone in numpy, checked against torch."""

import math

import numpy as np
import pytest
import torch
from attention_reference import sdpa_weights

from gptviz.build import GPT, ModelSpec, build_model
from gptviz.charts import attention as ac
from gptviz.charts.common import axis_name, position_labels
from gptviz.config import PRESETS, config_key
from gptviz.tokenizer import encode
from gptviz.trace import trace

TINY = PRESETS["tiny (teaching)"]
HEAD_DIM = TINY["emb_dim"] // TINY["n_heads"]
BATCH = [encode("Every effort moves you"), encode("Every day holds a")]


@pytest.fixture(scope="module")
def tiny():
    """A tiny GPTModel and its trace without dropout, so weights follow from q and k alone."""
    model = build_model(ModelSpec(GPT, config_key(TINY))).model
    return model, trace(model, BATCH)


def long_weights(T: int, H: int = 1, seed: int = 0) -> np.ndarray:
    """Random causal weights (rows sum to 1) for a long text, made cheaply."""
    weights = np.tril(np.random.default_rng(seed).random((H, T, T), dtype=np.float32))
    return weights / weights.sum(axis=-1, keepdims=True)


# --- the arithmetic --------------------------------------------------------------------------


def test_causal_mask_is_true_above_the_diagonal():
    assert (ac.causal_mask(4) == np.array([[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]], bool)).all()


def test_weights_from_the_scores_equal_torch_softmax(tiny):
    _, tr = tiny
    scores = tr["trf_blocks.1.att.scores"]
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    expected = torch.softmax(torch.from_numpy(np.array(scores)).masked_fill(mask, -torch.inf) / HEAD_DIM**0.5, dim=-1)
    np.testing.assert_allclose(ac.attention_weights(scores, HEAD_DIM), expected.numpy(), atol=1e-6)
    np.testing.assert_allclose(ac.attention_weights(scores, HEAD_DIM), tr["trf_blocks.1.att.weights"], atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1])
def test_traced_weights_equal_scaled_dot_product_attention(tiny, layer):
    model, tr = tiny
    expected = sdpa_weights(model, tr[f"trf_blocks.{layer}.norm1"], layer)
    np.testing.assert_allclose(tr[f"trf_blocks.{layer}.att.weights"], expected, atol=1e-6)


def test_weight_checks_pass_on_real_weights_and_catch_broken_ones(tiny):
    _, tr = tiny
    scores, weights = tr["trf_blocks.0.att.scores"][1, 2], tr["trf_blocks.0.att.weights"][1, 2]
    checks = ac.weight_checks(weights, scores, HEAD_DIM)
    assert checks["max_row_sum_error"] < 1e-6 and checks["max_above_diagonal"] == 0
    assert checks["max_recompute_error"] < 1e-6
    broken = np.array(weights)
    broken[2, 3] = 0.1  # a later token leaks in
    bad = ac.weight_checks(broken, scores, HEAD_DIM)
    assert bad["max_above_diagonal"] == pytest.approx(0.1) and bad["max_row_sum_error"] == pytest.approx(0.1)
    assert ac.weight_checks(weights, scores, HEAD_DIM * 4)["max_recompute_error"] > 1e-3  # wrong scaling shows


def test_uniform_weights_and_how_far_from_them():
    assert ac.uniform_weights(4).tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
    assert ac.max_over_uniform(ac.attention_weights(np.zeros((5, 5)), 64)) == pytest.approx(1.0)
    peaked = ac.attention_weights(np.eye(3) * 100, 1)  # each token looks only at itself
    assert ac.max_over_uniform(peaked) == pytest.approx(3.0)


# --- figures -----------------------------------------------------------------------------------


def test_step_figures_show_the_numbers_with_token_labels(tiny):
    _, tr = tiny
    scores, weights = tr["trf_blocks.1.att.scores"][0, 3], tr["trf_blocks.1.att.weights"][0, 3]
    labels = position_labels(BATCH[0])
    figs = {
        "scores": ac.scores_figure(scores, labels, 1, 3),
        "mask": ac.mask_figure(labels),
        "scaled": ac.scaled_figure(scores, labels, 1, 3, HEAD_DIM),
        "weights": ac.weights_figure(weights, labels, 1, 3),
    }
    for name, fig in figs.items():
        heat = fig.data[0]
        assert list(heat.x) == labels and list(heat.y) == labels, name
        assert fig.layout.xaxis.title.text.startswith("key") and fig.layout.yaxis.title.text.startswith("query")
        assert "query %{y}" in heat.hovertemplate and fig.layout.title.text
    np.testing.assert_array_equal(figs["scores"].data[0].z, scores)
    np.testing.assert_array_equal(figs["mask"].data[0].z, ac.causal_mask(4).astype(np.float32))
    np.testing.assert_array_equal(figs["weights"].data[0].z, weights)
    scaled = np.asarray(figs["scaled"].data[0].z)
    assert np.isnan(scaled[ac.causal_mask(4)]).all()
    visible = ~ac.causal_mask(4)
    np.testing.assert_allclose(scaled[visible], (scores / math.sqrt(HEAD_DIM))[visible], rtol=1e-6)
    assert "layer 1, head 3" in figs["scores"].layout.title.text
    assert figs["weights"].data[0].zmax == pytest.approx(float(weights.max()))  # 4 tokens: no colour cap
    assert figs["weights"].layout.title.subtitle.text is None


def test_steps_figure_puts_the_four_steps_in_linked_panels(tiny):
    _, tr = tiny
    scores, weights = tr["trf_blocks.1.att.scores"][0, 3], tr["trf_blocks.1.att.weights"][0, 3]
    labels = position_labels(BATCH[0])
    fig = ac.steps_figure(scores, weights, labels, 1, 3, HEAD_DIM)
    singles = [ac.scores_figure(scores, labels, 1, 3), ac.mask_figure(labels, ac.MAX_CELLS),
               ac.scaled_figure(scores, labels, 1, 3, HEAD_DIM), ac.weights_figure(weights, labels, 1, 3)]
    assert len(fig.data) == 4 and "layer 1, head 3" in fig.layout.title.text
    for i, (heat, single) in enumerate(zip(fig.data, singles)):
        np.testing.assert_array_equal(np.asarray(heat.z), np.asarray(single.data[0].z))
        assert heat.colorscale == single.data[0].colorscale and heat.hovertemplate == single.data[0].hovertemplate
        x, y = fig.layout[axis_name(i, "x")], fig.layout[axis_name(i, "y")]
        assert (x.matches, y.matches) == ((None, None) if i == 0 else ("x", "y"))  # zoom one, zoom all
        assert x.showticklabels == (i >= 2) and y.showticklabels == (i % 2 == 0)  # names on the outer axes
        assert x.domain[0] <= heat.colorbar.x <= x.domain[1] + 0.02  # each colour bar beside its own panel
        assert y.domain[0] < heat.colorbar.y < y.domain[1]
        assert single.layout.title.text in fig.layout.annotations[i].text
    assert list(fig.data[0].y) == labels and list(fig.data[3].x) == labels


def test_long_heatmaps_are_thinned_and_say_so():
    T = 1024
    weights = long_weights(T)
    labels = [f"{i}: t" for i in range(T)]
    fig = ac.weights_figure(weights[0], labels, 0, 0)
    z = np.asarray(fig.data[0].z)
    assert z.size <= ac.MAX_CELLS
    assert "showing" in fig.layout.title.subtitle.text and "showing" not in fig.layout.title.text
    cap = ac.colour_cap(weights[0])
    assert fig.data[0].zmax == pytest.approx(cap) and cap < 1  # row 0's weight 1 does not set the scale
    assert np.asarray(ac.mask_figure(labels).data[0].z).size <= ac.MASK_CELLS
    steps = ac.steps_figure(weights[0], weights[0], labels, 0, 0, 64)
    assert all(np.asarray(heat.z).shape == np.asarray(fig.data[0].z).shape for heat in steps.data)  # thinned alike
    notes = steps.layout.title.subtitle.text  # said once for the four panels
    assert notes.count("of 1024 rows") == 1 and notes.count("of 1024 columns") == 1 and "quantile" in notes


def test_heads_grid_has_one_panel_per_head(tiny):
    _, tr = tiny
    weights = tr["trf_blocks.0.att.weights"][1]  # (n_heads, T, T)
    labels = position_labels(BATCH[1])
    fig = ac.heads_grid_figure(weights, labels, 0)
    assert len(fig.data) == TINY["n_heads"]
    for h, heat in enumerate(fig.data):
        np.testing.assert_array_equal(heat.z, weights[h])
        assert list(heat.y) == labels and f"head {h}" in heat.hovertemplate
    assert [a.text for a in fig.layout.annotations] == [f"head {h}" for h in range(TINY["n_heads"])]
    assert "All 4 heads of layer 0" in fig.layout.title.text


def test_heads_grid_for_a_long_text_keeps_the_last_queries_and_fits_the_budget():
    T, H = 1024, 25  # gpt2-xl has 25 heads
    weights = long_weights(T, H)
    labels = [f"{i}: t" for i in range(T)]
    fig = ac.heads_grid_figure(weights, labels, 7)
    assert len(fig.data) == H
    assert sum(np.asarray(t.z).size for t in fig.data) <= ac.GRID_CELLS
    n_queries = math.isqrt(ac.GRID_CELLS // H)  # 48: fewer than 64 when 25 heads share the cells
    assert list(fig.data[0].y) == labels[-n_queries:]  # the last queries, whole
    assert f"the last {n_queries} of 1024 queries" in fig.layout.title.subtitle.text
    np.testing.assert_array_equal(fig.data[3].z[:, 0], weights[3, -n_queries:, 0])
    twelve = ac.heads_grid_figure(weights[:12], labels, 7)
    assert list(twelve.data[0].y) == labels[-ac.GRID_QUERIES:]
    assert len(fig.to_json()) < 450_000


def test_uniformity_figure_brackets_the_uniform_line(tiny):
    _, tr = tiny
    weights = tr["trf_blocks.0.att.weights"][0, 0]
    fig = ac.uniformity_figure(weights, position_labels(BATCH[0]), 0, 0)
    largest, smallest, uniform = (np.asarray(t.y) for t in fig.data)
    assert uniform.tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
    assert (largest >= uniform - 1e-7).all() and (smallest <= uniform + 1e-7).all()  # max >= mean >= min
    assert largest.tolist() == pytest.approx(np.where(ac.causal_mask(4), -1, weights).max(axis=-1).tolist())


def test_context_figure_is_one_heads_slice(tiny):
    _, tr = tiny
    context = tr["trf_blocks.0.att.context"][0, :, HEAD_DIM:2 * HEAD_DIM]
    fig = ac.context_figure(context, position_labels(BATCH[0]), 0, 1)
    np.testing.assert_array_equal(fig.data[0].z, context)
    assert f"(4, {HEAD_DIM})" in fig.layout.title.text


def test_all_attention_figures_for_1024_tokens_stay_under_the_page_budget():
    T, H = 1024, 12
    weights = long_weights(T, H)
    scores = np.random.default_rng(1).standard_normal((H, T, T), dtype=np.float32)
    labels = position_labels(np.arange(T) * 37 % 50000)
    context = np.random.default_rng(2).normal(size=(T, 64)).astype(np.float32)
    figs = [ac.steps_figure(scores[3], weights[3], labels, 11, 3, 64),
            ac.uniformity_figure(weights[3], labels, 11, 3), ac.heads_grid_figure(weights, labels, 11),
            ac.context_figure(context, labels, 11, 3)]
    sizes = [len(f.to_json()) for f in figs]
    assert sum(sizes) < 1_300_000, sizes
