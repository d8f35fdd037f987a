"""Figures for the Generate page: one step's sampling pipeline, and the whole run at a glance."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .common import axis_label, grid, layout

CHOSEN = "#e4572e"
KEPT = "#4a6fa5"
DROPPED = "#c9ced6"


def _candidate_labels(ids) -> list[str]:
    return [f"{axis_label(i)} #{i}" for i in ids]


def pipeline_figure(step, temperature: float, top_k, top_p) -> go.Figure:
    """Three panels over the step's most likely candidates: logits, logits / T, final probability.

    Bars of tokens that top-k or top-p removed are grey; the chosen token is orange.
    """
    c = step.candidates
    labels = _candidate_labels(c["ids"])
    kept = c["after_top_p"]
    colors = [CHOSEN if i == step.chosen else (KEPT if k else DROPPED) for i, k in zip(c["ids"], kept)]
    greedy = temperature == 0
    titles = (
        "1. logits (out_head)",
        "2. logits / temperature" if not greedy else "2. (greedy: no scaling)",
        "3. softmax after top-k, top-p" if not greedy else "3. argmax takes it all",
    )
    axes, panels = grid(1, 3, titles, horizontal_spacing=0.04)
    values = (c["logits"], c["scaled_logits"], c["probs"])
    hover = ("logit %{x:.4f}", "logit / T %{x:.4f}", "p %{x:.6f}")
    bars = [
        dict(
            type="bar", x=np.asarray(v, dtype=np.float32), y=labels, orientation="h", marker_color=colors,
            hovertemplate="%{y}<br>" + h + "<extra></extra>", showlegend=False, **panel,
        )
        for v, h, panel in zip(values, hover, panels)
    ]
    # one candidate axis, shared: named on the left panel only
    axes["yaxis"].update(autorange="reversed", type="category", title={"text": "candidate (by logit)"})
    for name, x_title in zip(("xaxis", "xaxis2", "xaxis3"), ("logit", "scaled logit", "probability")):
        axes[name]["title"] = {"text": x_title}
    for name in ("yaxis2", "yaxis3"):
        axes[name].update(matches="y", showticklabels=False)
    settings = "greedy (temperature 0)" if greedy else f"T={temperature:g}, top_k={top_k or 'off'}, top_p={top_p:g}"
    return go.Figure(bars, layout(
        f"Step {step.index + 1}: how the next token was chosen ({settings}; {len(labels)} of the vocabulary shown)",
        max(320, 110 + 24 * len(labels)), **axes,
    ))


def run_figure(steps) -> go.Figure:
    """Probability of each chosen token, step by step, with its rank in the hover."""
    x = [f"{s.index + 1}: {axis_label(s.chosen)}" for s in steps]
    bars = dict(
        type="bar", x=x, y=np.array([s.chosen_prob for s in steps], dtype=np.float32),
        marker_color=[CHOSEN if s.overruled else KEPT for s in steps],
        customdata=np.array([[s.chosen_rank, s.kept] for s in steps]),
        hovertemplate="step %{x}<br>p %{y:.6f}<br>rank %{customdata[0]} by logit"
        "<br>%{customdata[1]} tokens kept after top-k/top-p<extra></extra>",
    )
    return go.Figure(bars, layout(
        "The run: probability of each chosen token (orange: picked by you)", 340,
        xaxis={"title": {"text": "step: chosen token"}, "type": "category"},
        yaxis={"title": {"text": "probability"}},
    ))
