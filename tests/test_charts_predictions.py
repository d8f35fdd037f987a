"""Chart builders of the Predictions page: labels, titles, hover values, thinning, payload."""

from __future__ import annotations

import numpy as np
import pytest

from gptviz import predictions as P
from gptviz.charts import predictions as C
from gptviz.tokenizer import encode

VOCAB = 50257
IDS = encode("Every effort moves you")  # [6109, 3626, 6100, 345]


def random_logits(n_tokens: int, vocab: int = VOCAB, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_tokens, vocab), dtype=np.float32)


def long_ids(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, VOCAB, size=n)


def page_figures(logits, token_ids, k=50, temperature=1.0):
    """The figures the page draws for one batch row, from the same reductions it makes."""
    normalizer = P.log_normalizer(logits, temperature)
    top = P.top_k(logits, k, temperature, normalizer)
    after = P.continuations(logits, token_ids, temperature, normalizer)
    columns = P.readable_columns(top)
    col_probs = P.probabilities_of(logits, np.broadcast_to(columns, (len(logits), len(columns))), temperature, normalizer)
    buckets = P.vocab_buckets(logits)
    last = [len(logits) - 1]
    return [
        C.top_k_bars(last, top.ids[last], top.logits[last], top.probs[last], token_ids, after.ranks[last],
                     after.probs[last], after.logits[last], temperature, VOCAB),
        C.logits_heatmap(logits[:, columns], col_probs, columns, token_ids, temperature, VOCAB),
        C.full_vocab_heatmap(buckets.maxima, buckets.starts, buckets.width, token_ids, VOCAB),
    ]


# --- labels ----------------------------------------------------------------------------------


def test_predictor_labels_say_what_each_row_predicts_and_stay_unique():
    assert C.predictor_labels(IDS) == [
        "after 'Every' (pos 0)", "after '␣effort' (pos 1)", "after '␣moves' (pos 2)", "after '␣you' (pos 3)",
    ]
    repeated = encode("the the the the")
    assert len(set(C.predictor_labels(repeated))) == len(repeated)
    assert C.predictor_labels(IDS, [3]) == ["after '␣you' (pos 3)"]


def test_vocab_label_survives_ids_the_tokenizer_lacks():
    assert C.vocab_label(345) == "␣you"
    assert C.vocab_label(50300) == "<id 50300: no token>"


@pytest.mark.parametrize(
    ("p", "text"), [(0.41234, "0.412"), (0.0113, "0.011"), (0.00113, "0.0011"), (0.000021, "0.000021"), (0.00038, "0.00038"), (3.1e-9, "3.1e-09"), (0.0, "0.000")]
)
def test_format_prob_keeps_small_probabilities_readable(p, text):
    assert C.format_prob(p) == text


# --- logits heatmap --------------------------------------------------------------------------


def test_logits_heatmap_shows_logits_with_probabilities_on_hover():
    logits = random_logits(4)
    top = P.top_k(logits, 5, 0.5)
    columns = P.readable_columns(top)
    probs = P.softmax(logits, 0.5)[:, columns]
    fig = C.logits_heatmap(logits[:, columns], probs, columns, IDS, 0.5, VOCAB)
    trace = fig.data[0]
    np.testing.assert_array_equal(trace.z, logits[:, columns])
    np.testing.assert_allclose(trace.customdata, probs, rtol=1e-6)
    assert list(trace.y) == C.predictor_labels(IDS)
    assert list(trace.x) == [f"{C.vocab_label(i)} #{i}" for i in columns]
    assert "4 positions x 20 of the 50,257 vocabulary columns" in fig.layout.title.text
    assert "token t+1" in fig.layout.yaxis.title.text
    assert "p (τ=0.5)" in trace.hovertemplate and "logit" in trace.hovertemplate


def test_logits_heatmap_thins_positions_and_keeps_hover_aligned():
    logits = random_logits(1024, 300)
    columns = np.arange(0, 300, 10)
    probs = P.softmax(logits)[:, columns]
    fig = C.logits_heatmap(logits[:, columns], probs, columns, long_ids(1024), 1.0, 300)
    trace = fig.data[0]
    rows = np.asarray(trace.z).shape[0]
    assert rows == C.MAX_HEATMAP_ROWS and np.asarray(trace.z).shape[1] == 30
    assert "showing 200 of 1024 positions" in fig.layout.title.text
    kept = [int(label.rsplit("pos ", 1)[1].rstrip(")")) for label in trace.y]
    assert kept[0] == 0 and kept[-1] == 1023
    np.testing.assert_array_equal(trace.z, logits[kept][:, columns])
    np.testing.assert_allclose(trace.customdata, probs[kept], rtol=1e-6)


# --- whole vocabulary ------------------------------------------------------------------------


def test_full_vocab_heatmap_covers_every_id_in_buckets():
    logits = random_logits(4)
    buckets = P.vocab_buckets(logits)
    fig = C.full_vocab_heatmap(buckets.maxima, buckets.starts, buckets.width, IDS, VOCAB)
    trace = fig.data[0]
    z = np.asarray(trace.z)
    assert z.shape == (4, 1933)
    np.testing.assert_array_equal(trace.x, buckets.starts)
    assert z.max() == logits.max()  # the largest logit of all survives the squeeze
    assert "All 50,257 vocabulary columns" in fig.layout.title.text and "26 ids" in fig.layout.title.text
    assert "token id" in fig.layout.xaxis.title.text


def test_full_vocab_heatmap_thins_positions_to_its_cell_budget():
    buckets = P.vocab_buckets(random_logits(300))
    fig = C.full_vocab_heatmap(buckets.maxima, buckets.starts, buckets.width, long_ids(300), VOCAB)
    z = np.asarray(fig.data[0].z)
    assert z.shape[1] == 1933 and z.size <= C.FULL_VOCAB_CELLS
    assert f"showing {z.shape[0]} of 300 positions" in fig.layout.title.text


# --- top-k bars ------------------------------------------------------------------------------


def test_top_k_bars_one_panel_per_position_most_likely_on_top():
    logits = random_logits(4)
    top = P.top_k(logits, 5)
    after = P.continuations(logits, IDS)
    fig = C.top_k_bars(range(4), top.ids, top.logits, top.probs, IDS, after.ranks, after.probs, after.logits, 1.0, VOCAB)
    assert len(fig.data) == 4 and fig.layout.title.text == "Top-5 candidates for the next token at each of 4 positions"
    last = fig.data[3]
    assert list(last.y) == [f"{r}. {C.vocab_label(i)}" for r, i in enumerate(top.ids[3], start=1)]
    np.testing.assert_allclose(last.x, top.probs[3], rtol=1e-6)
    assert fig.layout.yaxis4.autorange == "reversed"
    titles = [a.text for a in fig.layout.annotations]
    assert titles[3].startswith("<b>after '␣you' (pos 3)</b>") and "text ends here" in titles[3]
    # the text's real next token is not in an untrained top-5: it gets its own bar with its rank
    first = fig.data[0]
    assert len(first.y) == 6 and first.y[-1] == f"{after.ranks[0]:,}. ␣effort"
    assert first.marker.color[-1] == C.NEXT_COLOR and set(first.marker.color[:-1]) == {C.BAR_COLOR}
    assert f"rank {after.ranks[0]:,} of 50,257" in titles[0] and "'␣effort'" in titles[0]


def test_top_k_bars_colour_the_next_token_when_it_is_a_top_candidate():
    logits = random_logits(4)
    logits[1, IDS[2]] = 50.0  # make '␣moves' the favourite after '␣effort'
    top = P.top_k(logits, 3)
    after = P.continuations(logits, IDS)
    fig = C.top_k_bars([1], top.ids[[1]], top.logits[[1]], top.probs[[1]], IDS, after.ranks[[1]], after.probs[[1]],
                       after.logits[[1]], 1.0, VOCAB)
    bars = fig.data[0]
    assert fig.layout.title.text == "Top-3 candidates for the next token after position 1"
    assert len(bars.y) == 3 and bars.y[0] == "1. ␣moves"
    assert list(bars.marker.color) == [C.NEXT_COLOR, C.BAR_COLOR, C.BAR_COLOR]
    assert "rank 1 of 50,257, p=1.000" in fig.layout.annotations[0].text


# --- payload ---------------------------------------------------------------------------------


def test_payload_for_1024_tokens_stays_under_budget():
    figures = page_figures(random_logits(1024), long_ids(1024))
    sizes = [len(fig.to_json()) for fig in figures]
    assert sum(sizes) < 1.5e6, sizes
    assert sizes[1] < 200_000 and sizes[2] < 700_000, sizes
