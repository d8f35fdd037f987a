"""The Attention page: the weights it draws are torch's, and any link opens a valid view."""

import math

import numpy as np
import pytest
import torch
from apptest_helpers import charts, errors, run_page, texts
from attention_reference import sdpa_weights
from plotly_arrays import array

from gptviz.build import GPT, ModelSpec, build_model
from gptviz.charts.attention import causal_mask
from gptviz.config import PRESETS, config_key
from gptviz.tokenizer import encode
from gptviz.trace import trace

PAGE = "pages/4_Attention.py"
TINY_NAME = "tiny (teaching)"
TINY = PRESETS[TINY_NAME]
HEAD_DIM = TINY["emb_dim"] // TINY["n_heads"]
BATCH = [encode("Every effort moves you"), encode("Every day holds a")]
STEPS, TAB = range(2)  # the page's charts: the four steps in one figure, then the open tab's one chart
SCORES, MASK, SCALED, WEIGHTS = range(4)  # the steps figure's panels (traces), in order
VIEWS = {"How even": "uniform", "All heads": "heads of layer", "Context vectors": "Context vectors"}


def tiny_page(**params):
    return run_page(PAGE, model="gpt", preset=TINY_NAME, **params)


def title(chart) -> str:
    return chart["layout"]["title"]["text"]


def panel(shown, step: int) -> dict:
    """One step's heatmap trace in the steps figure."""
    return shown[STEPS]["data"][step]


@pytest.fixture(scope="module")
def tiny_model():
    """The page's model, built independently; dropout off so the weights follow from q and k alone."""
    return build_model(ModelSpec(GPT, config_key(TINY))).model


def torch_weights(model, layer: int) -> np.ndarray:
    name = f"trf_blocks.{layer}.norm1"
    return sdpa_weights(model, trace(model, BATCH, keep=(name,))[name], layer)


# The widgets at their upper limits; dropout off so torch's weights can be compared.
LAST = {"layer": "1", "head": "3", "att_row": "1", "dropout": "false"}


@pytest.fixture(scope="module")
def last_layer_head():
    return tiny_page(**LAST)


def test_weights_shown_equal_torch_sdpa_and_the_scores_shown(last_layer_head, tiny_model):
    at = last_layer_head
    assert errors(at) == []
    shown = charts(at)
    assert len(shown) == 2
    weights, scores = array(panel(shown, WEIGHTS)["z"]), array(panel(shown, SCORES)["z"])
    np.testing.assert_allclose(weights, torch_weights(tiny_model, 1)[1, 3], atol=1e-6)  # row 1, head 3
    # softmax(mask(scores) / sqrt(head_dim)) in numpy, from the displayed scores alone
    masked = np.where(causal_mask(4), -np.inf, scores) / math.sqrt(HEAD_DIM)
    recomputed = np.exp(masked - masked.max(axis=1, keepdims=True))
    recomputed /= recomputed.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(weights, recomputed, atol=1e-6)
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-6)
    assert (weights[causal_mask(4)] == 0).all()
    scaled = array(panel(shown, SCALED)["z"])
    assert np.isnan(scaled[causal_mask(4)]).all()
    np.testing.assert_allclose(scaled[~causal_mask(4)], (scores / math.sqrt(HEAD_DIM))[~causal_mask(4)], rtol=1e-5)
    np.testing.assert_array_equal(array(panel(shown, MASK)["z"]), causal_mask(4))


def test_titles_labels_and_grid_follow_the_widgets(last_layer_head):
    shown = charts(last_layer_head)
    assert "layer 1, head 3" in title(shown[STEPS])
    assert panel(shown, WEIGHTS)["y"] == ["0: Every", "1: ␣day", "2: ␣holds", "3: ␣a"]  # batch row 1
    grid = charts(tiny_page(**LAST, att_view="All heads"))[TAB]
    assert len(grid["data"]) == TINY["n_heads"] and "layer 1" in title(grid)
    np.testing.assert_allclose(array(grid["data"][3]["z"]), array(panel(shown, WEIGHTS)["z"]))
    page = texts(last_layer_head)
    assert "every row sums to 1" in page and "every weight above the diagonal is 0" in page
    assert "(B, n_heads, T, T) = (2, 4, 4, 4)" in page


@pytest.mark.parametrize("params, shown_layer, shown_head, message", [
    ({"layer": "99"}, 1, 0, "there is no layer 99: showing layer 1"),
    ({"head": "-1"}, 0, 0, "there is no head -1: showing head 0"),
    ({"head": "abc"}, 0, 0, "`head=abc` is not a number: showing head 0"),
    ({"layer": "1", "head": "2.6"}, 1, None, "there is no head 2.6: showing head "),
])
def test_out_of_range_or_malformed_links_show_the_nearest_view(params, shown_layer, shown_head, message):
    at = tiny_page(**params)
    assert errors(at) == []
    page = texts(at)
    assert message in page
    if shown_head is None:  # a fraction: the slider decides, and the message names what it shows
        shown_head = int(page.split(message)[1][0])
        assert shown_head in (2, 3)
    assert f"layer {shown_layer}, head {shown_head}" in title(charts(at)[STEPS])


@pytest.mark.parametrize("view", VIEWS)
def test_each_tab_draws_its_own_chart_and_only_that(view):
    """Only the open tab is computed: the four steps plus that tab's one chart."""
    shown = charts(tiny_page(**LAST, att_view=view))
    assert len(shown) == 2 and VIEWS[view] in title(shown[TAB])
    assert not any(VIEWS[other] in title(c) for other in VIEWS if other != view for c in shown)


def test_malformed_batch_row_falls_back_to_row_0():
    at = tiny_page(att_row="7")
    assert errors(at) == []
    assert panel(charts(at), WEIGHTS)["y"][1] == "1: ␣effort"


def test_default_124m_skeleton_explains_there_is_no_attention():
    at = run_page(PAGE)
    assert errors(at) == [] and charts(at) == []
    assert "no real attention" in texts(at)


def test_mix_without_attention_explains_there_is_no_attention():
    at = run_page(PAGE, model="mix", parts=["feed_forward"], preset=TINY_NAME)
    assert errors(at) == [] and charts(at) == []
    assert "no real attention" in texts(at)


def test_mix_with_attention_draws_it():
    at = run_page(PAGE, model="mix", parts=["attention"], preset=TINY_NAME)
    assert errors(at) == [] and len(charts(at)) == 2


def test_edited_text_beyond_the_context_is_cut_and_drawn():
    text = " ".join(["word"] * 80)  # 80 tokens; the tiny preset's context is 64
    at = tiny_page(text=text, text2="")
    assert errors(at) == []
    assert "only its first 64 tokens are used" in texts(at)
    shown = charts(at)
    weights = array(panel(shown, WEIGHTS)["z"])
    assert weights.shape == (64, 64) and (weights[causal_mask(64)] == 0).all()
    assert "evenly spaced" not in str(shown[STEPS]["layout"]["title"])  # not thinned


def test_bad_config_gives_the_message():
    at = run_page(PAGE, model="gpt", cfg_emb_dim="770")
    assert errors(at) == [] and charts(at) == []
    assert "must be divisible by n_heads" in texts(at)


def test_empty_text_gives_a_hint():
    at = tiny_page(text="", text2="")
    assert errors(at) == [] and charts(at) == []
    assert "Type some text" in texts(at)


def test_layer_is_clamped_when_the_model_gets_fewer_blocks():
    at = tiny_page(cfg_n_layers="3", layer="2")
    assert "layer 2, head 0" in title(charts(at)[STEPS])
    at.number_input(key="cfg_n_layers").set_value(1).run()
    assert errors(at) == []
    assert "there is no layer 2: showing layer 0" in texts(at)
    assert "layer 0, head 0" in title(charts(at)[STEPS])


def test_trained_checkpoint_is_not_called_random(tmp_path):
    from gptviz.models import GPTModel
    from gptviz.weights import save_gpt2

    torch.manual_seed(0)
    directory = save_gpt2(GPTModel({**TINY, "qkv_bias": True}), tmp_path / "tiny-gpt2")
    at = run_page(PAGE, model="pretrained", weights_dir=str(directory))
    assert errors(at) == [] and len(charts(at)) == 2
    assert "This model has trained weights" in texts(at) and "weights are random" not in texts(at)
