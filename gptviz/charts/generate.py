"""Figures for the Generate page: one step's sampling pipeline, and the whole run at a glance."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..tokenizer import token_label
from .common import style

CHOSEN = "#e4572e"
KEPT = "#4a6fa5"
DROPPED = "#c9ced6"


def _candidate_labels(ids) -> list[str]:
    return [f"{token_label(i)} #{i}" for i in ids]


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
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.04)
    panels = (c["logits"], c["scaled_logits"], c["probs"])
    hover = ("logit %{x:.4f}", "logit / T %{x:.4f}", "p %{x:.6f}")
    for col, (values, h) in enumerate(zip(panels, hover), start=1):
        fig.add_trace(
            go.Bar(
                x=np.asarray(values, dtype=np.float32), y=labels, orientation="h", marker_color=colors,
                hovertemplate="%{y}<br>" + h + "<extra></extra>", showlegend=False,
            ),
            row=1, col=col,
        )
    fig.update_yaxes(autorange="reversed", type="category", title_text="candidate (by logit)", row=1, col=1)
    fig.update_xaxes(title_text="logit", row=1, col=1)
    fig.update_xaxes(title_text="scaled logit", row=1, col=2)
    fig.update_xaxes(title_text="probability", row=1, col=3)
    settings = "greedy (temperature 0)" if greedy else f"T={temperature:g}, top_k={top_k or 'off'}, top_p={top_p:g}"
    return style(
        fig,
        f"Step {step.index + 1}: how the next token was chosen ({settings}; {len(labels)} of the vocabulary shown)",
        height=max(320, 110 + 24 * len(labels)),
    )


def run_figure(steps) -> go.Figure:
    """Probability of each chosen token, step by step, with its rank in the hover."""
    x = [f"{s.index + 1}: {token_label(s.chosen)}" for s in steps]
    fig = go.Figure(
        go.Bar(
            x=x, y=np.array([s.chosen_prob for s in steps], dtype=np.float32),
            marker_color=[CHOSEN if s.overruled else KEPT for s in steps],
            customdata=np.array([[s.chosen_rank, s.kept] for s in steps]),
            hovertemplate="step %{x}<br>p %{y:.6f}<br>rank %{customdata[0]} by logit"
            "<br>%{customdata[1]} tokens kept after top-k/top-p<extra></extra>",
        )
    )
    fig.update_xaxes(title="step: chosen token", type="category")
    fig.update_yaxes(title="probability of the chosen token")
    return style(fig, "The run: probability of each chosen token (orange: picked by you)", height=340)
