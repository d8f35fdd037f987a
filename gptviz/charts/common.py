"""What every chart shares: token labels, a heatmap builder that keeps figures light, styling.

Figures travel whole to the browser on every rerun, so big matrices are thinned here,
once, with the thinning said in the title, rather than page by page.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..tokenizer import token_label

MAX_HEATMAP_CELLS = 40_000  # float32 cells per heatmap; about 200 kB on the wire
DIVERGING = "RdBu_r"  # red positive, blue negative, white at zero
SEQUENTIAL = "Viridis"


def position_labels(token_ids) -> list[str]:
    """Unique axis labels "3: ␣you": plotly merges equal category names, and texts repeat tokens."""
    return [f"{t}: {token_label(i)}" for t, i in enumerate(token_ids)]


def thin(n: int, limit: int) -> np.ndarray:
    """Indices of at most `limit` evenly spaced items out of n (all of them when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def thin_matrix(z: np.ndarray, max_cells: int = MAX_HEATMAP_CELLS):
    """Pick evenly spaced rows and columns so z has at most max_cells cells.

    Rows (usually tokens) are kept whole up to sqrt(max_cells) of them; columns give way
    first. Returns the thinned matrix and the row and column indices kept, so axes show
    real indices. Every value shown is a real value; none is averaged away.
    """
    rows, cols = z.shape
    row_idx = thin(rows, max(1, int(np.sqrt(max_cells))))
    col_idx = thin(cols, max(1, max_cells // len(row_idx)))
    return z[np.ix_(row_idx, col_idx)], row_idx, col_idx


def thinning_note(shown: int, total: int, what: str) -> str:
    return "" if shown == total else f" (showing {shown} of {total} {what}, evenly spaced)"


def heatmap(
    z,
    title: str,
    x_title: str,
    y_title: str,
    y_labels=None,
    x_labels=None,
    colorscale: str = DIVERGING,
    zmid: float | None = 0.0,
    hover: str = "%{y}<br>%{x}<br>value %{z:.4f}",
    max_cells: int = MAX_HEATMAP_CELLS,
    height: int | None = None,
    colorbar_title: str = "",
) -> go.Figure:
    """A labelled heatmap of a 2-D array, thinned to at most max_cells cells.

    Without labels, an axis shows the real index of each row or column kept.
    """
    z = np.asarray(z, dtype=np.float32)
    shown, rows, cols = thin_matrix(z, max_cells)
    note = thinning_note(len(cols), z.shape[1], "columns") + thinning_note(len(rows), z.shape[0], "rows")
    y = [y_labels[i] for i in rows] if y_labels is not None else rows.tolist()
    x = [x_labels[i] for i in cols] if x_labels is not None else cols.tolist()
    fig = go.Figure(
        go.Heatmap(
            z=shown, x=x, y=y, colorscale=colorscale, zmid=zmid, hovertemplate=hover + "<extra></extra>",
            colorbar={"title": {"text": colorbar_title}} if colorbar_title else None,
        )
    )
    fig.update_yaxes(autorange="reversed", title=y_title, type="category" if y_labels is not None else None)
    fig.update_xaxes(title=x_title, type="category" if x_labels is not None else None)
    style(fig, title + note, height or max(260, min(700, 90 + 22 * len(rows))))
    return fig


def style(fig: go.Figure, title: str, height: int | None = None) -> go.Figure:
    """Title, margins and hover style every chart shares."""
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        hoverlabel={"font": {"family": "monospace"}},
    )
    if height:
        fig.update_layout(height=height)
    return fig
