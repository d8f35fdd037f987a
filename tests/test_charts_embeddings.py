"""The Embeddings page's builders: heatmaps, dropout mask and counts, one token's vectors, PCA."""

import numpy as np
import pytest

from gptviz.charts import embeddings as ec
from gptviz.charts.common import position_labels

RNG = np.random.default_rng(123)


def test_embedding_panels_title_axes_and_values():
    tok, pos = RNG.standard_normal((2, 4, 768)).astype(np.float32)
    labels = position_labels([6109, 3626, 6100, 345])
    fig = ec.embedding_panels(tok, pos, tok + pos, labels)
    assert "(4, 768)" in fig.layout.title.text and "showing" not in fig.layout.title.text
    panel_titles = [a.text for a in fig.layout.annotations]
    assert [t.split(":")[0] for t in panel_titles] == ["<b>tok_emb</b>", "<b>pos_emb</b>", "<b>tok_emb + pos_emb</b>"]
    assert "embedding dimension" in fig.layout.xaxis3.title.text and "token" in fig.layout.yaxis2.title.text
    for trace, z, name in zip(fig.data, (tok, pos, tok + pos), ("tok_emb", "pos_emb", "tok_emb + pos_emb")):
        assert list(trace.y) == ["0: Every", "1: ␣effort", "2: ␣moves", "3: ␣you"]
        np.testing.assert_array_equal(np.asarray(trace.z), z)  # the default text: all 768 columns, nothing thinned
        assert trace.coloraxis == "coloraxis" and name + " %{z:.4f}" in trace.hovertemplate
    assert fig.layout.coloraxis.cmid == 0  # one diverging scale: white at zero, the three comparable


@pytest.mark.parametrize("T", [10, 32, 1024])
def test_embedding_panels_thin_evenly_and_say_so(T):
    z = RNG.standard_normal((T, 768)).astype(np.float32)
    labels = position_labels(RNG.integers(0, 50257, T))
    fig = ec.embedding_panels(z, z * 2, z * 3, labels)
    shown = np.asarray(fig.data[0].z)
    assert shown.size <= ec.EMB_PANEL_CELLS
    x = np.asarray(fig.data[0].x)
    if T <= 10:  # short texts keep every dimension
        assert list(x) == list(range(768)) and "showing" not in fig.layout.title.text
    else:
        assert f"showing {len(x)} of 768 columns, evenly spaced" in fig.layout.title.text
        # exactly evenly spaced: plotly then draws the heatmap as one crisp image, not brick by brick
        assert len(set(np.diff(x))) == 1 and len(set(np.diff([labels.index(y) for y in fig.data[0].y]))) <= 1
    # every value shown is a real value, at the row and column its axis labels name; same cells in each panel
    row, col = min(5, len(shown) - 1), 7
    for k, trace in enumerate(fig.data, start=1):
        assert trace.z[row][col] == k * z[labels.index(trace.y[row]), trace.x[col]]
    if T == 1024:
        ratio = ec.dropout_ratio(z, z * (RNG.random(z.shape) > 0.1) / 0.9)
        mask = ec.dropout_mask_heatmap(ratio, labels, 0.1)
        # the three panels and the dropout mask stay well under the 1.5 MB budget
        assert len(fig.to_json()) + len(mask.to_json()) < 900_000


def test_dropout_ratio_and_stats_count_the_zeroed_entries():
    emb = RNG.standard_normal((2, 4, 768)).astype(np.float32)
    keep = RNG.random(emb.shape) > 0.1
    drop = np.where(keep, emb / np.float32(0.9), 0).astype(np.float32)
    ratio = ec.dropout_ratio(emb, drop)
    np.testing.assert_allclose(ratio[keep], 1 / 0.9, rtol=1e-6)
    assert (ratio[~keep] == 0).all()
    stats = ec.dropout_stats(emb, drop, 0.1)
    assert stats["zeroed"] == int((~keep).sum()) and stats["total"] == 2 * 4 * 768
    assert stats["expected"] == pytest.approx(614.4)
    assert stats["expected_std"] == pytest.approx(np.sqrt(6144 * 0.1 * 0.9))
    assert stats["survivor_scale"] == pytest.approx(1 / 0.9, rel=1e-6) and stats["max_scale_error"] < 1e-5


def test_dropout_mask_heatmap_has_two_levels():
    ratio = np.array([[0.0, 1.25], [1.25, 1.25]], dtype=np.float32)
    fig = ec.dropout_mask_heatmap(ratio, ["0: a", "1: b"], 0.2)
    assert fig.data[0].zmin == 0 and fig.data[0].zmax == pytest.approx(1.25)
    assert "1.2500" in fig.layout.title.text and "zeroed" in fig.layout.title.text
    assert list(fig.data[0].colorbar.ticktext) == ["0 (dropped)", "1.2500"]


def test_vector_table_rounds_like_torch_prints():
    tok = np.array([1.61457, -0.10912, 2.0, 3.0], dtype=np.float32)
    table = ec.vector_table({"tok_emb": tok, "pos_emb": tok * 0}, n=3)
    assert table.shape == (2, 3) and list(table.index) == ["tok_emb", "pos_emb"]
    assert list(table.columns) == ["dim 0", "dim 1", "dim 2"]
    assert table.loc["tok_emb", "dim 0"] == 1.6146 and table.loc["tok_emb", "dim 1"] == -0.1091


def test_vector_lines_three_stacked_traces():
    tok, pos = RNG.standard_normal(48), RNG.standard_normal(48)
    fig = ec.vector_lines(tok, pos, tok + pos, "0: Every")
    assert [t.name for t in fig.data] == ["tok_emb", "pos_emb", "tok_emb + pos_emb"]
    assert all(len(t.y) == 48 for t in fig.data)
    np.testing.assert_allclose(fig.data[2].y, (tok + pos).astype(np.float32))
    assert "0: Every" in fig.layout.title.text and "embedding dimension" in fig.layout.xaxis3.title.text
    # stacked top to bottom, titled, one x axis (ticks on the bottom panel) and one y scale
    assert [(t.xaxis, t.yaxis) for t in fig.data] == [("x", "y"), ("x2", "y2"), ("x3", "y3")]
    tops = [fig.layout[f"yaxis{s}"].domain[1] for s in ("", "2", "3")]
    assert tops == sorted(tops, reverse=True) and fig.layout.yaxis3.domain[0] == 0
    assert [a.text for a in fig.layout.annotations] == ["tok_emb", "pos_emb", "tok_emb + pos_emb"]
    assert fig.layout.xaxis.matches == fig.layout.xaxis2.matches == "x3"
    assert fig.layout.xaxis.showticklabels is False and fig.layout.xaxis2.showticklabels is False
    assert {fig.layout[f"yaxis{s}"].matches for s in ("", "2", "3")} == {"y"}


def test_scale_table_shows_n01_statistics():
    table = ec.scale_table({"tok_emb": RNG.standard_normal((200, 300))})
    row = table.iloc[0]
    assert row["shape"] == "(200, 300)" and abs(row["mean"]) < 0.02 and row["std"] == pytest.approx(1, abs=0.02)


def test_pca_2d_recovers_known_axes():
    # Spread 2 along y and 1 along x: PC1 is y (80% of the variance), PC2 is x.
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]) + [5.0, -3.0]
    coords, explained = ec.pca_2d(X)
    np.testing.assert_allclose(coords, [[0, 1], [0, -1], [2, 0], [-2, 0]], atol=1e-12)
    np.testing.assert_allclose(explained, [0.8, 0.2])


def test_pca_2d_matches_projection_on_the_covariance_eigenvectors():
    X = RNG.standard_normal((30, 10)) @ RNG.standard_normal((10, 10))
    coords, explained = ec.pca_2d(X)
    centred = X - X.mean(0)
    values, vectors = np.linalg.eigh(np.cov(centred.T))
    top = vectors[:, ::-1][:, :2]
    expected = centred @ top
    np.testing.assert_allclose(np.abs(coords), np.abs(expected), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(explained, values[::-1][:2] / values.sum())
    again, _ = ec.pca_2d(X.copy())
    np.testing.assert_array_equal(coords, again)  # signs are fixed, not arbitrary


@pytest.mark.parametrize("n", [1, 2])
def test_pca_2d_with_too_few_points(n):
    coords, explained = ec.pca_2d(RNG.standard_normal((n, 5)))
    assert coords.shape == (n, 2) and np.isfinite(coords).all()
    if n == 1:
        assert (coords == 0).all() and (explained == 0).all()
    else:
        assert (coords[:, 1] == 0).all() and explained[0] == pytest.approx(1)


def test_merge_duplicates_joins_equal_vectors():
    X = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    points, labels, groups = ec.merge_duplicates(X, ["r0·0: Every", "r0·1: ␣x", "r1·0: Every"], ["row 0", "row 0", "row 1"])
    np.testing.assert_array_equal(points, [[1, 2], [3, 4]])
    assert labels == ["r0·0: Every = r1·0: Every", "r0·1: ␣x"]
    assert groups == ["row 0 + row 1", "row 0"]


def test_pca_scatter_labels_groups_and_thinning():
    coords, explained = ec.pca_2d(RNG.standard_normal((8, 6)))
    labels = [f"r{i // 4}·{i % 4}" for i in range(8)]
    fig = ec.pca_scatter(coords, labels, explained, "PCA of tok_emb", [f"row {i // 4}" for i in range(8)])
    assert [t.name for t in fig.data] == ["row 0", "row 1"]
    assert list(fig.data[1].text) == labels[4:] and fig.data[0].mode == "markers+text"
    assert "PC1" in fig.layout.xaxis.title.text and "% of the variance" in fig.layout.yaxis.title.text
    many = RNG.standard_normal((5000, 2))
    big = ec.pca_scatter(many, [str(i) for i in range(5000)], np.array([0.5, 0.2]), "PCA")
    assert sum(len(t.x) for t in big.data) <= ec.MAX_SCATTER_POINTS and big.data[0].mode == "markers"
    assert "showing" in big.layout.title.text and len(big.to_json()) < 100_000
