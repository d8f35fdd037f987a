"""The Generate page's figures: one step's pipeline in three panels, and the whole run."""

import numpy as np
import pytest

from gptviz.charts import generate as gc
from gptviz.stepper import walk
from gptviz.tokenizer import token_label

VOCAB = 50257


def fixed_logits(ids) -> np.ndarray:
    """Next-token logits that depend on the prefix only: no model needed."""
    return np.random.default_rng(len(ids)).standard_normal(VOCAB).astype(np.float32) * 3


@pytest.fixture(scope="module")
def sampled():
    return walk(fixed_logits, [6109, 3626], 4, temperature=1.5, top_k=5, top_p=0.9, seed=1, picks={2: 345})


def test_pipeline_figure_three_panels_share_the_candidate_axis(sampled):
    step = sampled[0]
    fig = gc.pipeline_figure(step, 1.5, 5, 0.9)
    logits, scaled, probs = fig.data
    c = step.candidates
    labels = [f"{token_label(i)} #{i}" for i in c["ids"]]
    for bars, values in ((logits, c["logits"]), (scaled, c["scaled_logits"]), (probs, c["probs"])):
        assert list(bars.y) == labels and bars.orientation == "h"
        np.testing.assert_allclose(bars.x, np.asarray(values, dtype=np.float32))
    # side by side, one candidate axis: only the left panel names the candidates
    assert [(t.xaxis, t.yaxis) for t in fig.data] == [("x", "y"), ("x2", "y2"), ("x3", "y3")]
    domains = [fig.layout[f"xaxis{s}"].domain for s in ("", "2", "3")]
    assert domains[0][1] < domains[1][0] and domains[1][1] < domains[2][0]
    assert fig.layout.yaxis.title.text == "candidate (by logit)" and fig.layout.yaxis.autorange == "reversed"
    assert fig.layout.yaxis2.matches == "y" and fig.layout.yaxis3.matches == "y"
    assert fig.layout.yaxis2.showticklabels is False and fig.layout.yaxis3.showticklabels is False
    assert [fig.layout[f"xaxis{s}"].title.text for s in ("", "2", "3")] == ["logit", "scaled logit", "probability"]
    assert [a.text for a in fig.layout.annotations] == [
        "1. logits (out_head)", "2. logits / temperature", "3. softmax after top-k, top-p"]
    # the chosen token is orange, what top-k/top-p removed grey, the rest blue
    colours = list(logits.marker.color)
    assert colours[list(c["ids"]).index(step.chosen)] == gc.CHOSEN
    assert {colours[i] for i, kept in enumerate(c["after_top_p"]) if not kept} <= {gc.DROPPED}
    assert "T=1.5, top_k=5, top_p=0.9" in fig.layout.title.text and fig.layout.title.text.startswith("Step 1")


def test_pipeline_figure_greedy_says_so():
    (step,) = walk(fixed_logits, [6109], 1)
    fig = gc.pipeline_figure(step, 0.0, 0, 1.0)
    assert "greedy (temperature 0)" in fig.layout.title.text
    assert [a.text for a in fig.layout.annotations][1:] == ["2. (greedy: no scaling)", "3. argmax takes it all"]


def test_run_figure_one_bar_per_step_overruled_in_orange(sampled):
    fig = gc.run_figure(sampled)
    (bars,) = fig.data
    assert list(bars.x) == [f"{s.index + 1}: {token_label(s.chosen)}" for s in sampled]
    np.testing.assert_allclose(bars.y, [s.chosen_prob for s in sampled], rtol=1e-6)
    assert list(bars.marker.color) == [gc.CHOSEN if s.overruled else gc.KEPT for s in sampled]
    assert sampled[2].overruled and bars.marker.color[2] == gc.CHOSEN
    assert np.asarray(bars.customdata).tolist() == [[s.chosen_rank, s.kept] for s in sampled]
    assert fig.layout.xaxis.type == "category" and fig.layout.yaxis.title.text
