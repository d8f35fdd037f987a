"""The Model page's builders: parameters per component, residual-stream statistics, block changes.

Pure functions of pandas tables (from gptviz.config.count_parameters, gptviz.stats); no
streamlit, no torch.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from ..config import count_parameters
from .common import layout

MB = 2**20  # the course prints sizes as bytes / 1024 / 1024 and calls them MB
STAT_LABELS = {
    "rms": "RMS, sqrt(mean(x²))",
    "std": "standard deviation",
    "mean": "mean",
    "min": "minimum",
    "max": "maximum",
}
STAT_HINTS = {"rms": "sqrt(mean(x²))", "std": "ddof=0, as LayerNorm", "mean": "", "min": "", "max": ""}
POINT_LABELS = {
    "input": "input (x entering the block)",
    "norm1": "norm1(x): what attention sees",
    "resid_mid": "resid_mid: x + attention",
    "norm2": "norm2(x): what feed-forward sees",
    "output": "output (x leaving the block)",
    "final_norm": "final_norm",
}
POINT_STYLES = {  # input and output coincide for a placeholder block: dash one to see both
    "input": {"dash": "solid", "symbol": "circle"},
    "norm1": {"dash": "dot", "symbol": "diamond"},
    "resid_mid": {"dash": "solid", "symbol": "square"},
    "norm2": {"dash": "dot", "symbol": "diamond-open"},
    "output": {"dash": "dash", "symbol": "x"},
    "final_norm": {"dash": "solid", "symbol": "star"},
}


# --- parameters and memory ---------------------------------------------------------------


def parameter_table(cfg: dict, parts=None, placeholder_blocks: bool = False) -> pd.DataFrame:
    """Parameters and fp32 memory per component, with each one's share of the total."""
    table = pd.DataFrame(count_parameters(cfg, parts, placeholder_blocks))
    total = table["params"].sum()
    table["MB"] = table["bytes_fp32"] / MB
    table["share"] = table["params"] / total if total else 0.0
    return table


def parameters_figure(table: pd.DataFrame) -> go.Figure:
    """Horizontal bars, one per component (a trf_blocks row counts all blocks), hover in parameters and MB."""
    total = int(table["params"].sum())
    comp = table.iloc[::-1]  # plotly draws the first bar at the bottom: keep the table's order top-down
    params = comp["params"].to_numpy()
    bars = dict(
        type="bar", x=params, y=comp["component"].tolist(), orientation="h",
        customdata=comp[["MB", "share"]].to_numpy(),
        text=[f"{p:,}" if p else "0 (placeholder)" for p in params], textposition="auto",
        marker_color=["#9aa5b1" if p == 0 else "#4c78a8" for p in params],
        hovertemplate="%{y}<br>%{x:,} parameters<br>%{customdata[0]:,.2f} MB (fp32)"
        "<br>%{customdata[1]:.1%} of the total<extra></extra>",
    )
    return go.Figure(bars, layout(
        f"Parameters per component: {total:,} in all", max(260, 90 + 34 * len(table)),
        xaxis={"title": {"text": "parameters"}}, yaxis={"title": {"text": "component"}},
    ))


# --- the residual stream -----------------------------------------------------------------


def _x_labels(n_layers: int) -> list[str]:
    return [f"block {i}" for i in range(n_layers)] + ["final_norm"]


def stats_figure(stats: pd.DataFrame, stat: str = "rms") -> go.Figure:
    """One line per point of a block (input, norm1, resid_mid, norm2, output) across the blocks.

    `stats` comes from gptviz.stats.activation_stats; final_norm is a single point after the
    last block. Hover shows every statistic of that point.
    """
    if stat not in STAT_LABELS:
        raise ValueError(f"stat must be one of {list(STAT_LABELS)}, got {stat!r}")
    n_layers = int(stats.loc[stats["point"] != "final_norm", "layer"].max()) + 1 if len(stats) else 0
    labels = _x_labels(n_layers)
    points, layers, values = stats["point"].to_numpy(), stats["layer"].to_numpy(), stats[stat].to_numpy()
    hover = stats[["name", "shape", "mean", "std", "min", "max", "rms"]].to_numpy()
    lines = []
    for point, style in POINT_STYLES.items():
        rows = points == point
        if not rows.any():
            continue
        lines.append(dict(
            type="scatter", x=[labels[i] for i in layers[rows]], y=values[rows], name=POINT_LABELS[point],
            mode="lines+markers", line={"dash": style["dash"]}, marker={"symbol": style["symbol"], "size": 9},
            customdata=hover[rows],
            hovertemplate="<b>%{customdata[0]}</b> (%{customdata[1]})<br>mean %{customdata[2]:.4f}"
            "<br>std %{customdata[3]:.4f}<br>min %{customdata[4]:.4f}<br>max %{customdata[5]:.4f}"
            "<br>rms %{customdata[6]:.4f}<extra></extra>",
        ))
    return go.Figure(lines, layout(
        f"The residual stream through the blocks: {STAT_LABELS[stat]}", 460,
        xaxis={"title": {"text": "where in the model (trf_blocks.i, then final_norm)"}, "type": "category",
               "categoryorder": "array", "categoryarray": labels},
        yaxis={"title": {"text": f"{STAT_LABELS[stat]} over all B x T x emb_dim values"}},
        legend={"orientation": "h", "y": -0.25, "x": 0},
    ))


def block_change_figure(changes: pd.DataFrame) -> go.Figure:
    """Bars of ||output - input|| / ||input|| per block: 0 for a block that returns its input."""
    bars = dict(
        type="bar", x=[b.rsplit(".", 1)[-1] for b in changes["block"]], y=changes["relative_change"].to_numpy(),
        customdata=changes[["max_abs_change", "change_rms", "unchanged"]].to_numpy(),
        hovertemplate="trf_blocks.%{x}<br>||output - input|| / ||input|| = %{y:.4f}<br>largest |change| "
        "%{customdata[0]:.4g}<br>rms of the change %{customdata[1]:.4g}<br>output == input: "
        "%{customdata[2]}<extra></extra>",
        marker_color="#4c78a8",
    )
    return go.Figure(bars, layout(
        "How much each block changes the stream", 320,
        xaxis={"title": {"text": "transformer block i (trf_blocks.i)"}, "type": "category"},
        yaxis={"title": {"text": "||output − input|| / ||input||"}, "rangemode": "tozero"},
    ))
