"""What every chart shares: token labels, the common layout, a heatmap builder that keeps
figures light, and a grid of panels.

Figures travel whole to the browser on every rerun, so big matrices are thinned here,
once, with the thinning said in the title, rather than page by page.

Every builder makes its figure with ONE `go.Figure(data, layout)` call, given the complete
layout as a dict (from `layout` below) and numbers as numpy arrays: plotly validates every
property it is given, and each later `update_layout`, `update_xaxes`, `update_traces` or
`add_trace` validates again (a few milliseconds each, on every rerun of every page).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ..tokenizer import token_label

MAX_LABEL_CHARS = 16  # GPT-2 has tokens of up to 66 characters (runs of "Ã"); an axis label that long buries the chart
MAX_HEATMAP_CELLS = 40_000  # float32 cells per heatmap; about 200 kB on the wire
DIVERGING = "RdBu_r"  # red positive, blue negative, white at zero
SEQUENTIAL = "Viridis"


def axis_label(token_id: int) -> str:
    """token_label cut to MAX_LABEL_CHARS, ending in "…" (token chips and tables show the whole piece)."""
    label = token_label(token_id)
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def position_labels(token_ids) -> list[str]:
    """Unique axis labels "3: ␣you": plotly merges equal category names, and texts repeat tokens."""
    return [f"{t}: {axis_label(i)}" for t, i in enumerate(token_ids)]


def thin(n: int, limit: int) -> np.ndarray:
    """Indices of at most `limit` evenly spaced items out of n (all of them when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(int))


def stride(n: int, limit: int) -> np.ndarray:
    """Every k-th index of n (0, k, 2k, ...), the smallest k giving at most `limit` of them.

    Exactly evenly spaced, unlike `thin`: plotly draws a heatmap whose x and y steps are all
    equal as one pixelated image (fast, crisp), and an unevenly spaced one brick by brick on
    a canvas (in the browser, about 10x slower per cell).
    """
    return np.arange(0, n, -(-n // max(1, limit)))


def thin_matrix(z: np.ndarray, max_cells: int = MAX_HEATMAP_CELLS):
    """Pick exactly evenly spaced rows and columns (`stride`) so z has at most max_cells cells.

    Rows (usually tokens) are kept whole up to sqrt(max_cells) of them; columns give way
    first. Returns the thinned matrix and the row and column indices kept, so axes show
    real indices. Every value shown is a real value; none is averaged away.
    """
    rows, cols = z.shape
    row_idx = stride(rows, max(1, int(np.sqrt(max_cells))))
    col_idx = stride(cols, max(1, max_cells // len(row_idx)))
    return z[np.ix_(row_idx, col_idx)], row_idx, col_idx


def thinning_note(shown: int, total: int, what: str) -> str:
    return "" if shown == total else f" (showing {shown} of {total} {what}, evenly spaced)"


# --- the layout -------------------------------------------------------------------------


def merged(base: dict, changes: dict) -> dict:
    """base with changes applied as plotly's update_layout would: nested dicts merge, the rest replaces."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def layout(title: str | dict, height: int | None = None, **settings) -> dict:
    """The layout every chart shares (title top left, narrow margins, monospace hover, height)
    with the chart's own `settings` (xaxis, yaxis, legend, ...) merged in.

    `title` may be a dict (text plus a subtitle); `margin={"t": 80}` changes one margin only.
    """
    common = {
        "title": {"x": 0, "xanchor": "left", "font": {"size": 15}},
        "margin": {"l": 10, "r": 10, "t": 60, "b": 10},
        "hoverlabel": {"font": {"family": "monospace"}},
    }
    if height:
        common["height"] = height
    return merged(common, {"title": title if isinstance(title, dict) else {"text": title}, **settings})


# --- heatmaps ---------------------------------------------------------------------------


def heatmap(
    z,
    title: str,
    x_title: str,
    y_title: str,
    y_labels=None,
    x_labels=None,
    colorscale=DIVERGING,
    zmid: float | None = 0.0,
    hover: str = "%{y}<br>%{x}<br>value %{z:.4f}",
    max_cells: int = MAX_HEATMAP_CELLS,
    height: int | None = None,
    colorbar_title: str = "",
    notes=(),
    notes_below: bool = False,
    trace: dict | None = None,
    axes: dict | None = None,
) -> go.Figure:
    """A labelled heatmap of a 2-D array, thinned to at most max_cells cells.

    Without labels, an axis shows the real index of each row or column kept. The thinning,
    then any further `notes`, follow the title (or sit below it: `notes_below`). `trace`
    adds Heatmap properties (zmin, a colorbar's ticks, customdata ...), `axes` layout
    settings (e.g. {"xaxis": {"tickangle": -60}}), both merged over the defaults here.
    """
    z = np.asarray(z, dtype=np.float32)
    shown, rows, cols = thin_matrix(z, max_cells)
    notes = [thinning_note(len(cols), z.shape[1], "columns"), thinning_note(len(rows), z.shape[0], "rows"), *notes]
    notes = [n for n in notes if n]
    height = height or max(260, min(700, 90 + 22 * len(rows)))
    room = {}
    if notes_below and notes:  # one subtitle line per note, and the room it takes
        title = {"text": title, "subtitle": {"text": "<br>".join(n.strip() for n in notes)}}
        room = {"margin": {"t": 70 + 16 * len(notes)}}
        height += 16 * len(notes)
    else:
        title += "".join(notes)
    heat = {
        "z": shown,
        "x": [x_labels[i] for i in cols] if x_labels is not None else cols,
        "y": [y_labels[i] for i in rows] if y_labels is not None else rows,
        "colorscale": colorscale,
        "zmid": zmid,
        "hovertemplate": hover + "<extra></extra>",
        **({"colorbar": {"title": {"text": colorbar_title}}} if colorbar_title else {}),
    }
    category = {"type": "category"}  # labels are names; without them an axis counts indices
    xaxis = {"title": {"text": x_title}, **(category if x_labels is not None else {})}
    yaxis = {"autorange": "reversed", "title": {"text": y_title}, **(category if y_labels is not None else {})}
    return go.Figure(
        {"type": "heatmap", **merged(heat, trace or {})},
        layout(title, height, **merged({"xaxis": xaxis, "yaxis": yaxis, **room}, axes or {})),
    )


# --- panels -------------------------------------------------------------------------------


def axis_name(i: int, letter: str) -> str:
    """The layout key of the i-th (0-based) x or y axis: xaxis, xaxis2, xaxis3 ..."""
    return f"{letter}axis{i + 1 if i else ''}"


def grid(rows: int, cols: int, titles=(), horizontal_spacing: float | None = None,
         vertical_spacing: float | None = None, title_size: int = 16) -> tuple[dict, list[dict]]:
    """Panels in rows x cols, laid out as plotly's make_subplots does (the same domains and
    panel titles), without its cost: layout settings, and each panel's trace axes.

    Returns (settings for `layout`: every axis with its domain, and the titles as annotations,
    and one {"xaxis": "x2", "yaxis": "y2"} per panel, row by row from the top left).
    """
    hs = 0.2 / cols if horizontal_spacing is None else horizontal_spacing  # make_subplots' defaults
    vs = 0.3 / rows if vertical_spacing is None else vertical_spacing
    # The same arithmetic as make_subplots (sums, not products), so domains agree to the last bit.
    widths = [(1.0 - hs * (cols - 1)) / cols] * cols
    heights = [(1.0 - vs * (rows - 1)) / rows] * rows
    settings, panels, annotations = {}, [], []
    for r in range(rows):
        up = rows - 1 - r  # rows are counted from the bottom of the figure
        y0 = sum(heights[:up]) + up * vs
        y_domain = [y0, min(y0 + heights[up], 1.0)]
        for c in range(cols):
            x0 = sum(widths[:c]) + c * hs
            x_domain = [x0, x0 + widths[c]]
            i = r * cols + c
            x, y = axis_name(i, "x").replace("axis", ""), axis_name(i, "y").replace("axis", "")
            settings[axis_name(i, "x")] = {"anchor": y, "domain": x_domain}
            settings[axis_name(i, "y")] = {"anchor": x, "domain": y_domain}
            panels.append({"xaxis": x, "yaxis": y})
            if i < len(titles) and titles[i]:
                annotations.append({
                    "y": y_domain[1], "xref": "paper", "x": sum(x_domain) / 2.0, "yref": "paper", "text": titles[i],
                    "showarrow": False, "font": {"size": title_size}, "xanchor": "center", "yanchor": "bottom",
                })
    settings["annotations"] = annotations
    return settings, panels
