"""The Embeddings page's builders: embedding heatmaps, the dropout mask, one token's vector, PCA.

Pure functions of numpy arrays (tok_emb, pos_emb, embeddings, drop_emb from a trace) and
token labels; no streamlit, no torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .common import DIVERGING, MAX_HEATMAP_CELLS, axis_name, grid, heatmap, layout, thin, thin_matrix, thinning_note

MAX_SCATTER_POINTS = 1000  # PCA points drawn; more are thinned evenly
MAX_TEXT_LABELS = 40  # above this many points the labels move to the hover text
KEPT_COLOR, DROPPED_COLOR = "#dbeafe", "#d62728"
# The dropout mask is one more (T, emb_dim) heatmap beside the three panels: half the usual
# cells keeps a 1024-token page under the 1.5 MB budget and still shows 141 x 141 values.
EMB_HEATMAP_CELLS = MAX_HEATMAP_CELLS // 2
# Cells per panel of `embedding_panels`: 10 tokens x 768 stay whole; 32 tokens show every
# 3rd dimension (256 columns: about 2-3 screen pixels each, where 768 would be under one).
# Measured in the browser (bench_app.py warm, 32 tokens): fewer cells draw faster.
EMB_PANEL_CELLS = 8192


def embedding_panels(tok, pos, total, labels, max_cells: int = EMB_PANEL_CELLS) -> go.Figure:
    """tok_emb, pos_emb and their sum as three stacked heatmap panels of one figure.

    Each is (T, emb_dim): a row per token, a column per embedding dimension. One colour
    scale for all three, so they compare (the sum spreads wider), and one x axis. The same
    rows and columns are kept in every panel (thinned evenly, said in the title).
    """
    parts = [("tok_emb", "the token's row of tok_emb", tok), ("pos_emb", "the position's row of pos_emb", pos),
             ("tok_emb + pos_emb", "the sum the model goes on with", total)]
    mats = [np.asarray(z, dtype=np.float32) for _, _, z in parts]
    T, D = mats[0].shape
    _, rows, cols = thin_matrix(mats[0], max_cells)
    y = [labels[i] for i in rows]
    panel = max(80, min(450, 14 * len(rows)))  # px per panel: 14 px a row, room for every token label
    gap, top, bottom = 55, 70, 50
    height = 3 * panel + 2 * gap + top + bottom
    axes, panels = grid(3, 1, titles=[f"<b>{name}</b>: {what}" for name, what, _ in parts],
                        vertical_spacing=gap / (height - top - bottom), title_size=13)
    traces = []
    for i, ((name, _, _), z, where) in enumerate(zip(parts, mats, panels)):
        traces.append(dict(
            type="heatmap", z=z[np.ix_(rows, cols)], x=cols, y=y, coloraxis="coloraxis",
            hovertemplate="%{y}<br>dim %{x}<br>" + name + " %{z:.4f}<extra></extra>", **where,
        ))
        axes[axis_name(i, "y")].update(
            type="category", autorange="reversed", tickfont={"size": 11},
            title={"text": "token (position: piece)" if i == 1 else ""},
            **({"dtick": 1} if len(rows) <= 32 else {}),  # every label while they fit; plotly would skip some
        )
        if i < 2:
            axes[axis_name(i, "x")].update(matches="x3", showticklabels=False)
    axes["xaxis3"]["title"] = {"text": f"embedding dimension (0 .. {D - 1})"}
    notes = thinning_note(len(cols), D, "columns") + thinning_note(len(rows), T, "rows")
    title = f"Three ({T}, {D}) matrices, one colour scale" + notes
    return go.Figure(traces, layout(
        title, height, margin={"t": top, "b": bottom},
        coloraxis={"colorscale": DIVERGING, "cmid": 0, "colorbar": {"title": {"text": "value"}}}, **axes,
    ))


def scale_table(arrays: dict) -> pd.DataFrame:
    """Mean, standard deviation and range of each array: how large the numbers are."""
    rows = []
    for name, a in arrays.items():
        a = np.asarray(a, dtype=np.float64)
        rows.append({"array": name, "shape": str(tuple(a.shape)), "mean": a.mean(), "std": a.std(),
                     "min": a.min(), "max": a.max()})
    return pd.DataFrame(rows).round(4)


# --- dropout ------------------------------------------------------------------------


def dropout_ratio(embeddings, drop_emb) -> np.ndarray:
    """drop_emb / embeddings: 0 where dropout zeroed an entry, 1/(1-p) where it kept and scaled it."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    drop_emb = np.asarray(drop_emb, dtype=np.float32)
    ratio = np.ones_like(embeddings)  # an exact 0 in x stays 0 either way: call it kept
    nonzero = embeddings != 0
    ratio[nonzero] = drop_emb[nonzero] / embeddings[nonzero]
    return ratio


def dropout_stats(embeddings, drop_emb, p: float) -> dict:
    """How many entries dropout zeroed against the p*N it should zero on average, and the survivors' scale."""
    ratio = dropout_ratio(embeddings, drop_emb)
    zeroed = np.asarray(drop_emb) == 0
    n = ratio.size
    survivors = ratio[~zeroed]
    return {
        "total": int(n),
        "zeroed": int(zeroed.sum()),
        "expected": p * n,
        "expected_std": float(np.sqrt(n * p * (1 - p))),
        "scale": 1 / (1 - p),
        "survivor_scale": float(np.median(survivors)) if survivors.size else float("nan"),
        "max_scale_error": float(np.abs(survivors - 1 / (1 - p)).max()) if survivors.size else 0.0,
    }


def dropout_mask_heatmap(ratio, labels, p: float, max_cells: int = EMB_HEATMAP_CELLS) -> go.Figure:
    """Which entries of the summed embeddings dropout zeroed (red) and which it scaled by 1/(1-p)."""
    scale = 1 / (1 - p)
    return heatmap(
        ratio, f"drop_emb / embeddings: red = zeroed, blue = kept x 1/(1-{p:g}) = {scale:.4f}",
        x_title=f"embedding dimension (0 .. {ratio.shape[1] - 1})", y_title="token (position: piece)",
        y_labels=labels, colorscale=[[0, DROPPED_COLOR], [0.5, DROPPED_COLOR], [0.5, KEPT_COLOR], [1, KEPT_COLOR]],
        zmid=None, hover="%{y}<br>dim %{x}<br>drop_emb / embeddings %{z:.4f}", max_cells=max_cells,
        colorbar_title="ratio",
        trace={"zmin": 0, "zmax": scale,
               "colorbar": {"tickvals": [0, scale], "ticktext": ["0 (dropped)", f"{scale:.4f}"]}},
    )


# --- one token's vector ---------------------------------------------------------------


def vector_lines(tok, pos, total, label: str) -> go.Figure:
    """One token's tok_emb, pos_emb and their sum over the embedding dimensions, stacked."""
    parts = [("tok_emb", tok, "#1f77b4"), ("pos_emb", pos, "#ff7f0e"), ("tok_emb + pos_emb", total, "#2ca02c")]
    D = len(tok)
    # Three panels stacked, one x axis: the bottom one (x3) carries the ticks and the title.
    axes, panels = grid(3, 1, titles=[p[0] for p in parts], vertical_spacing=0.06)
    dims = np.arange(D)
    lines = []
    for i, ((name, values, color), panel) in enumerate(zip(parts, panels)):
        lines.append(dict(
            type="scatter", x=dims, y=np.asarray(values, dtype=np.float32), name=name, mode="lines",
            line={"color": color, "width": 1}, hovertemplate="dim %{x}<br>" + name + " %{y:.4f}<extra></extra>", **panel,
        ))
        # one y scale for all three: the sum spreads wider than either part
        axes[axis_name(i, "y")].update(title={"text": "value"}, matches="y")
        if i < 2:
            axes[axis_name(i, "x")].update(matches="x3", showticklabels=False)
    axes["xaxis3"]["title"] = {"text": f"embedding dimension (0 .. {D - 1})"}
    return go.Figure(lines, layout(
        f"The vectors of token {label}: three vectors of {D} dimensions", 560, showlegend=False, **axes,
    ))


def vector_table(vectors: dict, n: int = 8) -> pd.DataFrame:
    """The first n values of each vector, rounded to 4 decimals as torch prints them."""
    return pd.DataFrame(
        {name: np.round(np.asarray(v[:n], dtype=np.float64), 4) for name, v in vectors.items()},
        index=[f"dim {d}" for d in range(min(n, *(len(v) for v in vectors.values())))],
    ).T


# --- 2-D projection -------------------------------------------------------------------


def pca_2d(X) -> tuple[np.ndarray, np.ndarray]:
    """Project the rows of X onto its two principal components, via SVD of the centred matrix.

    Returns (coordinates (n, 2), fraction of the variance each component explains). Signs
    are fixed (the largest loading of each component is positive) so a projection does not
    flip between runs. Missing components (fewer than 3 rows, or rank < 2) are zeros.
    """
    X = np.asarray(X, dtype=np.float64)
    centred = X - X.mean(axis=0, keepdims=True)
    U, S, Vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, int((S > S[:1].max(initial=0) * 1e-9).sum()))  # drop components that are rounding noise
    signs = np.sign(Vt[np.arange(k), np.abs(Vt[:k]).argmax(axis=1)])
    signs[signs == 0] = 1
    coords = np.zeros((X.shape[0], 2))
    coords[:, :k] = U[:, :k] * S[:k] * signs
    variance = S**2
    explained = np.zeros(2)
    if variance.sum() > 0:
        explained[:k] = variance[:k] / variance.sum()
    return coords, explained


def merge_duplicates(X, labels, groups):
    """One point per distinct vector: the same token twice has the same tok_emb row, and would
    hide under itself. Labels of equal vectors are joined; their groups too, if they differ."""
    X = np.asarray(X)
    unique, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # keep the order the tokens come in
    merged_labels, merged_groups = [], []
    for u in order:
        members = np.flatnonzero(inverse.ravel() == u)
        merged_labels.append(" = ".join(labels[i] for i in members))
        merged_groups.append(" + ".join(dict.fromkeys(str(groups[i]) for i in members)))
    return unique[order], merged_labels, merged_groups


def pca_scatter(coords, labels, explained, title: str, groups=None) -> go.Figure:
    """Labelled scatter of a 2-D projection; `groups` (names, e.g. the batch row) colour the points."""
    coords = np.asarray(coords, dtype=np.float32)
    n = len(coords)
    keep = thin(n, MAX_SCATTER_POINTS)
    groups = np.asarray(["tokens"] * n if groups is None else [str(g) for g in groups])
    show_text = len(keep) <= MAX_TEXT_LABELS
    points = []
    for g in dict.fromkeys(groups[keep]):
        idx = keep[groups[keep] == g]
        points.append(dict(
            type="scatter", x=coords[idx, 0], y=coords[idx, 1], mode="markers+text" if show_text else "markers",
            text=[labels[i] for i in idx], textposition="top center", name=g,
            marker={"size": 9}, hovertemplate="%{text}<br>PC1 %{x:.3f}<br>PC2 %{y:.3f}<extra></extra>",
        ))
    note = "" if len(keep) == n else f" (showing {len(keep)} of {n} tokens, evenly spaced)"
    return go.Figure(points, layout(
        title + note, 440,
        xaxis={"title": {"text": f"PC1 ({explained[0]:.0%} of the variance)"}, "zeroline": True},
        yaxis={"title": {"text": f"PC2 ({explained[1]:.0%} of the variance)"}, "zeroline": True},
        showlegend=len(np.unique(groups)) > 1, legend={"orientation": "h", "y": -0.2},
    ))
