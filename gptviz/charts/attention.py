"""The Attention page's builders: scores, the causal mask, scaled and masked scores, weights.

Pure functions of numpy arrays from a trace (`trf_blocks.{i}.att.scores`, `.att.weights`,
`.att.context`) and token labels; no streamlit, no torch. The arithmetic helpers redo the
course's three lines in numpy, so the page (and the tests) can check the model's weights
against the scores shown:

    attn_scores = queries @ keys.transpose(2, 3)
    attn_scores.masked_fill_(mask_bool, -torch.inf)
    attn_weights = torch.softmax(attn_scores / keys.shape[-1]**0.5, dim=-1)
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from .common import SEQUENTIAL, axis_name, grid, heatmap, layout, thin_matrix

# Cells per T x T heatmap: four of them, the grid and the context stay under the 1.5 MB
# a page may send, even for 1024 tokens (a float32 cell is about 5.3 bytes in base64).
MAX_CELLS = 30_000
MASK_CELLS = 10_000  # the mask is a plain triangle: fewer cells show it as well
GRID_CELLS = 60_000  # all heads together
GRID_QUERIES = 64  # the grid shows at most the last 64 query positions
GRID_COLS = 4
MASK_COLORS = [[0.0, "#e8eef7"], [0.5, "#e8eef7"], [0.5, "#3b3b3b"], [1.0, "#3b3b3b"]]
WEIGHT_QUANTILE = 0.99  # the weights' colour scale tops out here (see colour_cap)
AXIS_LABEL_LIMIT = 16  # small multiples show token tick labels up to this many per axis


# --- the arithmetic -------------------------------------------------------------------------


def causal_mask(n_tokens: int) -> np.ndarray:
    """mask_bool: True above the diagonal, where a query would see a later token (set to -inf)."""
    return np.triu(np.ones((n_tokens, n_tokens), dtype=bool), k=1)


def scale_and_mask(scores, head_dim: int) -> np.ndarray:
    """The scores as softmax receives them: masked to -inf above the diagonal, divided by sqrt(head_dim)."""
    z = np.array(scores, dtype=np.float32)
    z[..., causal_mask(z.shape[-1])] = -np.inf
    return z / np.float32(math.sqrt(head_dim))


def softmax_rows(z) -> np.ndarray:
    """Softmax over the last axis; -inf entries get weight exactly 0."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def attention_weights(scores, head_dim: int) -> np.ndarray:
    """softmax(mask(scores) / sqrt(head_dim)): the course's weights, recomputed from its scores."""
    return softmax_rows(scale_and_mask(scores, head_dim))


def weight_checks(weights, scores, head_dim: int) -> dict:
    """What a learner can verify about one head's (T, T) weights."""
    weights = np.asarray(weights, dtype=np.float64)
    T = weights.shape[-1]
    return {
        "max_row_sum_error": float(np.abs(weights.sum(axis=-1) - 1).max()),
        "max_above_diagonal": float(np.abs(weights[..., causal_mask(T)]).max()) if T > 1 else 0.0,
        "max_recompute_error": float(np.abs(attention_weights(scores, head_dim) - weights).max()),
    }


def uniform_weights(n_tokens: int) -> np.ndarray:
    """What uniform attention would be: 1/(i+1) for the i+1 tokens query i can see."""
    return 1.0 / np.arange(1, n_tokens + 1)


def max_over_uniform(weights) -> float:
    """How peaked the most peaked row is: max over rows of (largest weight) / (1/(i+1)); 1 = uniform."""
    w = np.asarray(weights, dtype=np.float64)
    return float((w.max(axis=-1) / uniform_weights(w.shape[-1])).max())


# --- figures --------------------------------------------------------------------------------


def _where(layer: int, head: int) -> str:
    return f"layer {layer}, head {head}"


def _pair_hover(what: str, fmt: str = ":.4f") -> str:
    return "query %{y}<br>key %{x}<br>" + what + " %{z" + fmt + "}"


def _pair_heatmap(z, labels, title: str, **options) -> go.Figure:
    """A (T, T) query x key heatmap, half page wide: notes like "(showing 173 of 259 ...)" go
    below the title, on subtitle lines."""
    return heatmap(
        z, title, x_title="key: the token looked at", y_title="query: the token looking", x_labels=labels,
        y_labels=labels, notes_below=True, **options,
    )


def scores_figure(scores, labels, layer: int, head: int, max_cells: int = MAX_CELLS) -> go.Figure:
    """attn_scores = queries @ keys.transpose(2, 3), before the mask and scaling."""
    T = scores.shape[-1]
    return _pair_heatmap(
        scores, labels, f"1. Scores q·k, {_where(layer, head)}, ({T}, {T})", hover=_pair_hover("q·k ="),
        max_cells=max_cells, colorbar_title="q·k",
    )


def mask_figure(labels, max_cells: int = MASK_CELLS) -> go.Figure:
    """mask_bool: the entries masked_fill_ sets to -inf (keys after the query)."""
    T = len(labels)
    return _pair_heatmap(
        causal_mask(T).astype(np.float32), labels, f"2. The causal mask, ({T}, {T}): dark = -inf",
        colorscale=MASK_COLORS, zmid=None, max_cells=max_cells,
        hover="query %{y}<br>key %{x}<br>mask_bool %{z} (1 = a later token: -inf)",
        trace={"zmin": 0, "zmax": 1, "colorbar": {"tickvals": [0.25, 0.75], "ticktext": ["visible", "-inf"]}},
    )


def scaled_figure(scores, labels, layer: int, head: int, head_dim: int, max_cells: int = MAX_CELLS) -> go.Figure:
    """The masked scores divided by sqrt(head_dim); masked cells are left blank."""
    z = scale_and_mask(scores, head_dim)
    z[np.isinf(z)] = np.nan  # blank cells: -inf cannot be coloured
    return _pair_heatmap(
        z, labels, f"3. Masked and ÷ √{head_dim}, {_where(layer, head)}: blank = -inf",
        hover=_pair_hover("q·k / √d ="), max_cells=max_cells, colorbar_title="scaled", trace={"hoverongaps": False},
    )


def colour_cap(weights, quantile: float = WEIGHT_QUANTILE) -> float:
    """Top of the weights' colour scale: a high quantile of the visible weights, not the maximum.

    Query 0 sees only itself (weight 1) and early queries few tokens, so with a long text the
    maximum would leave every later row one dark colour.
    """
    w = np.asarray(weights, dtype=np.float32)
    visible = w[~causal_mask(w.shape[-1])]
    top, cap = float(visible.max()), float(np.quantile(visible, quantile))
    return top if cap > top / 2 else max(cap, 1e-6)  # cap only when the maximum would wash colours out


def weights_figure(weights, labels, layer: int, head: int, max_cells: int = MAX_CELLS) -> go.Figure:
    """attn_weights: each row a softmax, summing to 1, zero above the diagonal."""
    T = weights.shape[-1]
    cap = colour_cap(weights)
    capped = cap < float(np.max(weights))
    return _pair_heatmap(
        weights, labels, f"4. Weights = softmax per row, {_where(layer, head)}, ({T}, {T})",
        colorscale=SEQUENTIAL, zmid=None, hover=_pair_hover("weight ="), max_cells=max_cells,
        colorbar_title="weight", trace={"zmin": 0, "zmax": cap},
        notes=[f" (weights: showing colours up to {cap:.3g}, the {WEIGHT_QUANTILE:.0%} quantile; hover shows every value)"]
        if capped else [],
    )


def steps_figure(scores, weights, labels, layer: int, head: int, head_dim: int, max_cells: int = MAX_CELLS) -> go.Figure:
    """The four steps above as the panels of one 2 x 2 figure, each with its own colour bar.

    One figure instead of four: the browser lays out and draws one plot instead of four
    (about 100 ms each on a 2-core machine), and the panels share their query and key
    axes, so zooming into one zooms into all four. Token names label the outer axes only.
    """
    parts = [scores_figure(scores, labels, layer, head, max_cells), mask_figure(labels, max_cells),
             scaled_figure(scores, labels, layer, head, head_dim, max_cells),
             weights_figure(weights, labels, layer, head, max_cells)]
    n_rows = len(parts[0].data[0].y)  # every panel keeps the same rows and columns (same thinning)
    long_labels = max(len(str(label)) for label in parts[0].data[0].x)
    panel = max(170, min(600, 22 * n_rows))  # px: 22 a token, as a single heatmap has
    # What a panel's title said below it (thinning, the weights' colour cap) is said once, for all four.
    notes = list(dict.fromkeys(
        note for fig in parts if fig.layout.title.subtitle.text for note in fig.layout.title.subtitle.text.split("<br>")
    ))
    top, gap, bottom = 84 + 18 * len(notes), 75, 40 + 7 * long_labels  # room for the notes and rotated key names
    height = 2 * panel + top + gap + bottom
    titles = [f"<b>{fig.layout.title.text}</b>" for fig in parts]
    axes, panels = grid(2, 2, titles=titles, horizontal_spacing=0.12, vertical_spacing=gap / (height - top - bottom),
                        title_size=13)
    traces = []
    for i, (fig, where) in enumerate(zip(parts, panels)):
        x_domain, y_domain = axes[axis_name(i, "x")]["domain"], axes[axis_name(i, "y")]["domain"]
        heat = fig.data[0].to_plotly_json()
        colorbar = {**heat.get("colorbar", {}), "x": x_domain[1] + 0.01, "xanchor": "left", "thickness": 12,
                    "y": sum(y_domain) / 2, "yanchor": "middle", "len": y_domain[1] - y_domain[0]}
        traces.append({**heat, **where, "colorbar": colorbar})
        left, bottom_row = i % 2 == 0, i >= 2
        axes[axis_name(i, "x")].update(
            type="category", showticklabels=bottom_row, **({} if i == 0 else {"matches": "x"}),
            title={"text": "key: the token looked at" if bottom_row else ""},
        )
        axes[axis_name(i, "y")].update(
            type="category", autorange="reversed", showticklabels=left, **({} if i == 0 else {"matches": "y"}),
            title={"text": "query: the token looking" if left else ""},
        )
    T = len(labels)
    title = f"The four steps for {_where(layer, head)}: ({T}, {T}), query rows x key columns"
    return go.Figure(traces, layout(
        {"text": title, **({"subtitle": {"text": "<br>".join(notes)}} if notes else {})}, height,
        margin={"t": top, "b": bottom, "l": 10, "r": 60}, **axes,
    ))


def uniformity_figure(weights, labels, layer: int, head: int) -> go.Figure:
    """Per query: the largest and smallest weight on a visible token beside uniform 1/(i+1)."""
    w = np.asarray(weights, dtype=np.float32)
    T = w.shape[-1]
    visible = ~causal_mask(T)
    largest = np.where(visible, w, -np.inf).max(axis=-1)
    smallest = np.where(visible, w, np.inf).min(axis=-1)
    few = T <= AXIS_LABEL_LIMIT * 4
    x = list(labels) if few else np.arange(T)  # a long text: positions, not 3 copies of every label
    lines = [
        dict(
            type="scatter", x=x, y=y.astype(np.float32), name=name, mode="lines+markers" if few else "lines",
            line={"dash": dash}, hovertemplate="query %{x}<br>" + name + " %{y:.4f}<extra></extra>",
        )
        for y, name, dash in ((largest, "largest weight", "solid"), (smallest, "smallest weight", "solid"),
                              (uniform_weights(T), "uniform: 1 / (i + 1)", "dash"))
    ]
    return go.Figure(lines, layout(
        f"How far from uniform ({_where(layer, head)}): each row's weights on visible tokens", 340,
        xaxis={"title": {"text": "query: the token looking" + ("" if few else " (position)")},
               "type": "category" if few else "linear"},
        yaxis={"title": {"text": "attention weight (log scale)"}, "type": "log"},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
    ))


def heads_grid_figure(weights, labels, layer: int, max_queries: int = GRID_QUERIES,
                      max_cells: int = GRID_CELLS) -> go.Figure:
    """Every head's weights side by side, one colour scale (0 to the largest weight).

    weights: (n_heads, T, T). The last query rows (at most `max_queries`, fewer when many
    heads share the budget) are shown whole, and the key columns are thinned so that all
    heads together stay under `max_cells` cells.
    """
    w = np.asarray(weights, dtype=np.float32)
    H, T, _ = w.shape
    per_head = max(1, max_cells // H)
    n_queries = min(T, max_queries, math.isqrt(per_head))  # thin_matrix keeps this many rows whole
    rows_kept = np.arange(T - n_queries, T)
    cols = min(H, GRID_COLS)
    n_rows = math.ceil(H / cols)
    y_labels = [labels[i] for i in rows_kept]
    few = n_queries <= AXIS_LABEL_LIMIT and T <= AXIS_LABEL_LIMIT  # room for token names on the axes
    height = n_rows * 200 + (150 if few else 90)  # room below for the bottom row's token names
    axes, panels = grid(n_rows, cols, titles=[f"head {h}" for h in range(H)], horizontal_spacing=0.03,
                        vertical_spacing=45 / height)
    heads, shown_cols = [], T
    for h in range(H):
        z, _, col_idx = thin_matrix(w[h, rows_kept], per_head)
        shown_cols = len(col_idx)
        heads.append(dict(
            type="heatmap", z=z, x=[labels[i] for i in col_idx], y=y_labels, coloraxis="coloraxis",
            hovertemplate=f"head {h}<br>" + _pair_hover("weight =") + "<extra></extra>", **panels[h],
        ))
    for i in range(n_rows * cols):  # token names on the outer axes only, when they fit
        left, bottom = few and i % cols == 0, few and i // cols == n_rows - 1
        axes[axis_name(i, "y")].update(autorange="reversed", type="category", showticklabels=left)
        axes[axis_name(i, "x")].update(type="category", showticklabels=bottom, **({"tickangle": -45} if bottom else {}))
    notes = [f"the last {n_queries} of {T} queries"] if n_queries < T else []
    notes += [f"{shown_cols} of {T} keys, evenly spaced"] if shown_cols < T else []
    title = f"All {H} heads of layer {layer}: attention weights (query rows x key columns)"
    return go.Figure(heads, layout(
        {"text": title, **({"subtitle": {"text": "(showing " + "; ".join(notes) + ")"}} if notes else {})}, height,
        coloraxis={"colorscale": SEQUENTIAL, "cmin": 0, "colorbar": {"title": {"text": "weight"}}},
        **({"margin": {"t": 80}} if notes else {}), **axes,
    ))


def context_figure(context, labels, layer: int, head: int, max_cells: int = MAX_CELLS) -> go.Figure:
    """One head's context vectors: its weights @ values, (T, head_dim)."""
    T, d = context.shape
    return heatmap(
        context, f"Context vectors of {_where(layer, head)}: attn_weights @ values, ({T}, {d})",
        x_title=f"dimension within the head (0 .. {d - 1})", y_title="query: the token looking",
        y_labels=labels, hover="%{y}<br>dim %{x}<br>context %{z:.4f}", max_cells=max_cells,
        colorbar_title="context",
    )
