"""Charts of the model's predictions: logits over readable vocabulary columns, the whole
vocabulary in buckets, and the top-k next tokens at each position.

Position t's logits score the token that comes *after* it, so every position axis here
says "after '␣effort' (pos 1)" rather than naming the token itself. Inputs are already
reduced (a few columns, top-k, buckets): a full 50257-wide row never reaches a figure.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from ..tokenizer import VOCAB_SIZE
from .common import SEQUENTIAL, axis_label, axis_name, grid, heatmap, layout, thin, thinning_note

MAX_HEATMAP_ROWS = 200  # positions drawn in a heatmap; more are thinned evenly
FULL_VOCAB_CELLS = 100_000  # cells of the whole-vocabulary heatmap (~530 kB of float32)
NEXT_COLOR = "#e4572e"  # the token the text actually continues with
BAR_COLOR = "#4c78a8"


def vocab_label(token_id: int) -> str:
    """axis_label, also for ids a bigger-than-GPT-2 vocab_size has but the tokenizer lacks."""
    return axis_label(token_id) if 0 <= token_id < VOCAB_SIZE else f"<id {token_id}: no token>"


def predictor_labels(token_ids, positions=None) -> list[str]:
    """Axis labels for rows of logits: "after '␣effort' (pos 1)", unique thanks to the position."""
    positions = range(len(token_ids)) if positions is None else positions
    return [f"after '{vocab_label(token_ids[t])}' (pos {t})" for t in positions]


def format_prob(p: float) -> str:
    """A probability readable at any size, two significant digits below 0.01: 0.412, 0.0011, 0.000021, 3.1e-09."""
    if p >= 0.01 or p == 0:
        return f"{p:.3f}"
    if p >= 1e-6:
        return f"{p:.{1 - math.floor(math.log10(p))}f}"
    return f"{p:.1e}"


def _keep_whole(n_rows: int, n_cols: int) -> int:
    """max_cells that makes common.heatmap keep an already thinned matrix whole
    (it keeps at most sqrt(max_cells) rows and max_cells / rows columns)."""
    return max(n_rows * n_cols, n_rows**2)


def logits_heatmap(logits, probs, column_ids, token_ids, temperature: float, vocab_size: int) -> go.Figure:
    """Logits at a few chosen vocabulary columns, one row per position: (T, C) arrays.

    Colour is the logit; hover adds the probability at `temperature`. Positions beyond
    MAX_HEATMAP_ROWS are thinned evenly (said in the title).
    """
    logits = np.asarray(logits, dtype=np.float32)
    rows = thin(len(logits), MAX_HEATMAP_ROWS)
    columns = [f"{vocab_label(i)} #{i}" for i in column_ids]  # the id keeps equal-looking labels apart
    return heatmap(
        logits[rows],
        title=(
            f"Logits: {len(logits)} positions x {len(columns)} of the {vocab_size:,} vocabulary columns"
            + thinning_note(len(rows), len(logits), "positions")
        ),
        x_title=f"candidate next token (the {len(columns)} most likely across positions, #id)",
        y_title="position t (scores token t+1)",
        y_labels=predictor_labels(token_ids, rows),
        x_labels=columns,
        hover=f"%{{y}}<br>next token %{{x}}<br>logit %{{z:.4f}}<br>p (τ={temperature:g}) %{{customdata:.3g}}",
        max_cells=_keep_whole(len(rows), len(columns)),
        colorbar_title="logit",
        height=max(320, min(900, 170 + 22 * len(rows))),
        trace={"customdata": np.asarray(probs, dtype=np.float32)[rows]},
        axes={"xaxis": {"tickangle": -60}},
    )


def full_vocab_heatmap(maxima, starts, width: int, token_ids, vocab_size: int) -> go.Figure:
    """The whole vocabulary: (T, n_buckets) largest logit in each run of `width` ids.

    Positions are thinned evenly so the figure keeps to FULL_VOCAB_CELLS cells.
    """
    maxima = np.asarray(maxima, dtype=np.float32)
    n_buckets = maxima.shape[1]
    rows = thin(len(maxima), max(1, FULL_VOCAB_CELLS // n_buckets))
    return heatmap(
        maxima[rows],
        title=(
            f"All {vocab_size:,} vocabulary columns: the largest logit in each of {n_buckets:,} runs of "
            f"{width} ids" + thinning_note(len(rows), len(maxima), "positions")
        ),
        x_title=f"token id (each cell covers {width} consecutive ids from the one shown)",
        y_title="position t (scores token t+1)",
        y_labels=predictor_labels(token_ids, rows),
        hover=f"%{{y}}<br>ids %{{x}} to +{width - 1}<br>largest logit %{{z:.4f}}",
        max_cells=_keep_whole(len(rows), n_buckets),
        colorscale=SEQUENTIAL,
        zmid=None,
        colorbar_title="max logit",
        height=max(320, min(800, 170 + 16 * len(rows))),
        trace={"x": np.asarray(starts, dtype=np.int32)},  # real token ids on the axis, not bucket numbers
    )


def _bar_trace(ids, logits, probs, ranks, next_id: int, panel: dict) -> dict:
    labels = [f"{r:,}. {vocab_label(i)}" for r, i in zip(ranks, ids)]
    colors = [NEXT_COLOR if i == next_id else BAR_COLOR for i in ids]
    return dict(
        type="bar",
        x=np.asarray(probs, dtype=np.float32),
        y=labels,
        orientation="h",
        marker_color=colors,
        text=[format_prob(p) for p in probs],
        textposition="outside",
        cliponaxis=False,
        customdata=np.stack([np.asarray(ids, dtype=np.float64), np.asarray(logits, dtype=np.float64)], axis=-1),
        hovertemplate="%{y} (id %{customdata[0]})<br>logit %{customdata[1]:.4f}<br>p %{x:.3g}<extra></extra>",
        showlegend=False,
        **panel,
    )


def top_k_bars(
    positions,
    top_ids,
    top_logits,
    top_probs,
    token_ids,
    next_rank,
    next_prob,
    next_logit,
    temperature: float,
    vocab_size: int,
    columns: int = 2,
) -> go.Figure:
    """The k most likely next tokens after each of `positions`, one small panel per position.

    top_* are (P, k); next_* (P,) describe the token the text really continues with
    (rank 0 where the text ends). It is coloured when in the top-k, and added below the
    top-k as its own bar, with its rank, when not.
    """
    positions = [int(t) for t in positions]
    k = np.shape(top_ids)[1]
    cols = max(1, min(columns, len(positions)))
    n_rows = math.ceil(len(positions) / cols)
    titles = [_panel_title(t, token_ids, next_rank[i], next_prob[i], vocab_size) for i, t in enumerate(positions)]
    panel = 60 + 20 * (k + 1)  # pixels of bars per panel
    gap = 140  # between panel rows: the x axis title above, the next three-line panel title below
    plot_area = n_rows * panel + (n_rows - 1) * gap
    axes, panels = grid(n_rows, cols, titles, horizontal_spacing=0.18,
                        vertical_spacing=gap / plot_area if n_rows > 1 else 0.0, title_size=12)
    bars = []
    for i, t in enumerate(positions):
        next_id = int(token_ids[t + 1]) if t + 1 < len(token_ids) else -1
        ids, logits, probs = list(top_ids[i]), list(top_logits[i]), list(top_probs[i])
        ranks = list(range(1, k + 1))
        if next_id >= 0 and next_id not in ids:  # show where the real next token sits
            ids, logits, probs = ids + [next_id], logits + [next_logit[i]], probs + [next_prob[i]]
            ranks.append(int(next_rank[i]))
        bars.append(_bar_trace(ids, logits, probs, ranks, next_id, panels[i]))
        axes[axis_name(i, "y")].update(autorange="reversed", type="category")
        axes[axis_name(i, "x")].update(
            title={"text": f"probability of the next token (τ={temperature:g})"}, range=[0, 1.3 * max(probs)],
            tickformat=".2~g",
        )
    where = f"after position {positions[0]}" if len(positions) == 1 else f"at each of {len(positions)} positions"
    return go.Figure(bars, layout(
        f"Top-{k} candidates for the next token {where}", plot_area + 190,
        margin={"t": 130, "b": 60}, uniformtext={"minsize": 9, "mode": "show"}, **axes,
    ))


def _panel_title(t: int, token_ids, rank: int, prob: float, vocab_size: int) -> str:
    head = f"<b>{predictor_labels(token_ids, [t])[0]}</b>"
    if t + 1 >= len(token_ids):
        return f"{head}<br>the text ends here:<br>generation uses this row"
    label = vocab_label(int(token_ids[t + 1]))
    return f"{head}<br>the text continues with '{label}':<br>rank {int(rank):,} of {vocab_size:,}, p={format_prob(float(prob))}"
