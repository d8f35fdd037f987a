"""Plotly figure builders: pure functions from numpy/pandas to go.Figure.

No streamlit and no torch here: a builder takes arrays and labels and returns a figure,
so each one can be unit tested and reused by any page. One module per stage.
"""

from .common import grid, heatmap, layout, position_labels, thin, thin_matrix
