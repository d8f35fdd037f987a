"""What every chart shares: the layout helper, heatmap notes, and panels laid out as make_subplots would."""

import json

import numpy as np
import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from gptviz.charts.common import MAX_LABEL_CHARS, axis_label, grid, heatmap, layout, position_labels
from gptviz.tokenizer import token_label


@pytest.mark.parametrize(
    ("rows", "cols", "titles", "options"),
    [
        (3, 1, ["tok_emb", "pos_emb", "tok_emb + pos_emb"], {"vertical_spacing": 0.06}),  # vector_lines
        (3, 4, [f"head {h}" for h in range(12)], {"horizontal_spacing": 0.03, "vertical_spacing": 45 / 690}),
        (4, 2, [f"pos {t}" for t in range(7)], {"horizontal_spacing": 0.18, "vertical_spacing": 0.1}),  # a gap
        (1, 3, ["1. logits", "", "3. softmax"], {"horizontal_spacing": 0.04}),  # an untitled panel
        (1, 1, ["one"], {"vertical_spacing": 0.0}),
        (2, 3, [], {}),  # make_subplots' default spacing
    ],
)
def test_grid_lays_out_panels_exactly_as_make_subplots(rows, cols, titles, options):
    """Same domains, anchors and panel titles: the same picture, without make_subplots' cost."""
    settings, panels = grid(rows, cols, titles, **options)
    expected = make_subplots(rows=rows, cols=cols, subplot_titles=titles or None, **options)
    assert sent_layout(go.Figure(layout=settings)) == sent_layout(expected)
    n = rows * cols
    assert len(panels) == n and panels[0] == {"xaxis": "x", "yaxis": "y"}
    assert panels[-1] == ({"xaxis": f"x{n}", "yaxis": f"y{n}"} if n > 1 else panels[0])


def sent_layout(fig) -> dict:
    """The layout as the browser gets it, without the theme every figure carries."""
    layout_json = json.loads(fig.to_json())["layout"]
    layout_json.pop("template")
    return layout_json


def test_grid_titles_can_be_smaller():
    settings, _ = grid(1, 2, ["a", "b"], title_size=12)
    assert [a["font"] for a in settings["annotations"]] == [{"size": 12}, {"size": 12}]


def test_layout_merges_a_charts_settings_into_the_common_style():
    built = layout({"text": "Title", "subtitle": {"text": "note"}}, 300, margin={"t": 130},
                   xaxis={"title": {"text": "x"}})
    assert built["title"] == {"text": "Title", "x": 0, "xanchor": "left", "font": {"size": 15},
                              "subtitle": {"text": "note"}}
    assert built["margin"] == {"l": 10, "r": 10, "t": 130, "b": 10}  # one margin changed, the rest kept
    assert built["height"] == 300 and built["hoverlabel"] == {"font": {"family": "monospace"}}
    assert built["xaxis"] == {"title": {"text": "x"}}
    assert "height" not in layout("Title")


def test_heatmap_notes_follow_the_title_or_go_below_it():
    z = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
    beside = heatmap(z, "Big", "x", "y", max_cells=10_000, notes=[" (showing colours up to 1)"])
    assert beside.layout.title.text == ("Big (showing 100 of 300 columns, evenly spaced) (showing 100 of 300 rows, "
                                        "evenly spaced) (showing colours up to 1)")
    assert beside.layout.title.subtitle.text is None
    below = heatmap(z, "Big", "x", "y", max_cells=10_000, notes=[" (showing colours up to 1)"], notes_below=True)
    assert below.layout.title.text == "Big"
    assert below.layout.title.subtitle.text.split("<br>") == [
        "(showing 100 of 300 columns, evenly spaced)", "(showing 100 of 300 rows, evenly spaced)",
        "(showing colours up to 1)",
    ]
    assert below.layout.margin.t == 70 + 3 * 16 and below.layout.height == beside.layout.height + 3 * 16
    small = heatmap(z[:4, :4], "Small", "x", "y", notes_below=True)
    assert small.layout.title.text == "Small" and small.layout.margin.t == 60  # nothing to say: no room taken


def test_heatmap_takes_extra_trace_and_axis_settings():
    fig = heatmap(np.eye(3), "I", "x", "y", trace={"zmin": 0, "colorbar": {"tickvals": [0, 1]}},
                  colorbar_title="c", axes={"xaxis": {"tickangle": -60}})
    heat = fig.data[0]
    assert heat.zmin == 0 and list(heat.colorbar.tickvals) == [0, 1] and heat.colorbar.title.text == "c"
    assert fig.layout.xaxis.tickangle == -60 and fig.layout.xaxis.title.text == "x"
    np.testing.assert_array_equal(heat.x, [0, 1, 2])  # real indices when there are no labels


def test_axis_labels_cut_gpt2s_longest_tokens_but_keep_ordinary_ones_whole():
    longest = max(range(50257), key=lambda i: len(token_label(i)))  # a run of "Ã", 66 characters
    assert len(token_label(longest)) > 60
    label = axis_label(longest)
    assert len(label) == MAX_LABEL_CHARS and label.endswith("…")
    assert label[:-1] == token_label(longest)[: MAX_LABEL_CHARS - 1]
    assert axis_label(345) == token_label(345) == "␣you"
    assert position_labels([6109, longest]) == ["0: Every", f"1: {label}"]
