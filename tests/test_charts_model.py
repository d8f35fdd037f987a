"""The Model page's library: module table, parameter counts, residual-stream statistics, figures."""

import fnmatch

import numpy as np
import pytest
import torch

from gptviz import architecture, stats
from gptviz.build import GPT, SKELETON, ModelSpec, build_model
from gptviz.charts import model as mc
from gptviz.config import GPT_CONFIG_124M, PRESETS, config_key, total_parameters
from gptviz.models import ALL_PARTS, GPTModel
from gptviz.tokenizer import encode
from gptviz.trace import trace

TINY = PRESETS["tiny (teaching)"]
BATCH = [encode("Every effort moves you"), encode("Every day holds a")]


@pytest.fixture(scope="module")
def tiny_gpt():
    built = build_model(ModelSpec(GPT, config_key(TINY)))
    return built.model, trace(built.model, BATCH, dropout_generator=built.dropout_generator())


@pytest.fixture(scope="module")
def tiny_skeleton():
    built = build_model(ModelSpec(SKELETON, config_key(TINY)))
    return built.model, trace(built.model, BATCH, dropout_generator=built.dropout_generator())


# --- statistics against numpy --------------------------------------------------------------


def test_tensor_stats_equal_numpy():
    x = np.random.default_rng(0).normal(0.3, 2.0, size=(2, 5, 16)).astype(np.float32)
    s = stats.tensor_stats(x)
    x64 = x.astype(np.float64)
    assert s["mean"] == pytest.approx(x64.mean())
    assert s["std"] == pytest.approx(np.std(x64, ddof=0))
    assert s["min"] == pytest.approx(x64.min()) and s["max"] == pytest.approx(x64.max())
    assert s["rms"] == pytest.approx(np.sqrt((x64**2).mean()))
    assert s["token_mean_absmax"] == pytest.approx(np.abs(x64.mean(axis=-1)).max())
    assert s["token_std_mean"] == pytest.approx(x64.std(axis=-1).mean())


def test_activation_stats_rows_follow_the_names_and_skip_missing_ones():
    values = {"trf_blocks.0.input": np.ones((1, 2, 4)), "trf_blocks.0.output": np.full((1, 2, 4), 3.0),
              "trf_blocks.1.input": np.full((1, 2, 4), 3.0), "trf_blocks.1.output": -np.ones((1, 2, 4)),
              "final_norm": np.zeros((1, 2, 4))}
    table = stats.activation_stats(values, stats.residual_names(2))
    assert table["name"].tolist() == ["trf_blocks.0.input", "trf_blocks.0.output", "trf_blocks.1.input",
                                      "trf_blocks.1.output", "final_norm"]
    assert table["layer"].tolist() == [0, 0, 1, 1, 2]  # final_norm after the last block
    assert table["point"].tolist() == ["input", "output", "input", "output", "final_norm"]
    assert table["rms"].tolist() == pytest.approx([1, 3, 3, 1, 0])
    assert table["shape"].iloc[0] == "1 x 2 x 4"


def test_keep_patterns_ask_for_exactly_the_residual_names():
    names = stats.residual_names(3)
    patterns = stats.keep_patterns()
    assert all(any(fnmatch.fnmatchcase(n, p) for p in patterns) for n in names)
    assert not any(fnmatch.fnmatchcase("trf_blocks.0.att.weights", p) for p in patterns)


def test_real_layer_norm_outputs_have_token_mean_0_and_std_1(tiny_gpt):
    _, tr = tiny_gpt
    table = stats.activation_stats(tr, stats.residual_names(TINY["n_layers"]))
    normed = table[table["point"].isin(["norm1", "norm2", "final_norm"])]
    assert len(normed) == 2 * TINY["n_layers"] + 1
    assert (normed["token_mean_absmax"] < 1e-5).all()
    assert normed["token_std_mean"].to_numpy() == pytest.approx(1.0, abs=1e-3)
    stream = table[table["point"] == "input"]
    assert not (stream["token_std_mean"].to_numpy() == pytest.approx(1.0, abs=1e-2))  # x itself is not normed
    row = table.set_index("name").loc["trf_blocks.1.resid_mid"]
    x = tr["trf_blocks.1.resid_mid"].astype(np.float64)
    assert row["rms"] == pytest.approx(np.sqrt((x**2).mean())) and row["max"] == pytest.approx(x.max())


def test_block_changes_of_the_skeleton_are_exactly_zero(tiny_skeleton):
    _, tr = tiny_skeleton
    changes = stats.block_changes(tr, TINY["n_layers"])
    assert changes["unchanged"].all()
    assert (changes[["max_abs_change", "change_rms", "relative_change"]].to_numpy() == 0).all()


def test_block_changes_of_real_blocks_equal_numpy(tiny_gpt):
    _, tr = tiny_gpt
    changes = stats.block_changes(tr, TINY["n_layers"])
    assert not changes["unchanged"].any()
    x_in, x_out = tr["trf_blocks.1.input"].astype(np.float64), tr["trf_blocks.1.output"].astype(np.float64)
    assert changes["relative_change"].iloc[1] == pytest.approx(np.linalg.norm(x_out - x_in) / np.linalg.norm(x_in))
    assert changes["max_abs_change"].iloc[1] == pytest.approx(np.abs(x_out - x_in).max())


# --- parameters ----------------------------------------------------------------------------


def test_parameter_table_of_gpt_config_124m():
    table = mc.parameter_table(GPT_CONFIG_124M)
    assert table["params"].sum() == 163_009_536
    assert total_parameters(GPT_CONFIG_124M, tied=True) == 124_412_160
    row = table.set_index("component").loc["tok_emb"]
    assert row["params"] == 50257 * 768 and row["MB"] == pytest.approx(50257 * 768 * 4 / 2**20)
    assert table["share"].sum() == pytest.approx(1.0)
    assert mc.parameter_table(GPT_CONFIG_124M, placeholder_blocks=True)["params"].sum() == 2 * 50257 * 768 + 1024 * 768


def test_parameters_figure_bars_and_hover():
    table = mc.parameter_table(GPT_CONFIG_124M, placeholder_blocks=True)
    fig = mc.parameters_figure(table)
    bar = fig.data[0]
    assert dict(zip(bar.y, bar.x)) == dict(zip(table["component"], table["params"]))
    assert "MB" in bar.hovertemplate and "parameters" in bar.hovertemplate
    assert "77,981,184" in fig.layout.title.text
    assert "0 (placeholder)" in bar.text
    assert fig.layout.xaxis.title.text == "parameters" and fig.layout.yaxis.title.text


def test_module_table_counts_match_the_built_model(tiny_gpt):
    model, _ = tiny_gpt
    table = architecture.module_table(model, TINY, 2, 4).set_index("name")
    assert table.loc["(model)", "parameters"] == sum(p.numel() for p in model.parameters())
    d = TINY["emb_dim"]
    assert table.loc["trf_blocks.0.att.W_query", "parameters"] == d * d  # qkv_bias False
    assert table.loc["trf_blocks.0.ff.layers.0", "parameters"] == d * 4 * d + 4 * d
    assert table.loc["trf_blocks.0.norm1", "parameters"] == 2 * d
    assert "trf_blocks.1" in table.index and "trf_blocks.1.att" not in table.index  # collapsed
    expanded = architecture.module_table(model, TINY, 2, 4, expand_all=True)
    assert "trf_blocks.1.att.W_value" in set(expanded["name"])
    assert len(expanded) == len(list(model.named_modules()))


def test_module_names_are_the_courses(tiny_gpt):
    model, _ = tiny_gpt
    names = set(architecture.module_table(model, TINY, 1, 3)["name"])
    for name in ("tok_emb", "pos_emb", "drop_emb", "trf_blocks", "final_norm", "out_head",
                 "trf_blocks.0.att.W_query", "trf_blocks.0.att.W_key", "trf_blocks.0.att.W_value",
                 "trf_blocks.0.att.out_proj", "trf_blocks.0.ff.layers.1", "trf_blocks.0.norm1",
                 "trf_blocks.0.norm2", "trf_blocks.0.drop_shortcut"):
        assert name in names


def _shape(text: str) -> tuple:
    return tuple(int(s) for s in text.split(" x "))


def test_module_output_shapes_equal_the_trace(tiny_gpt):
    model, tr = tiny_gpt
    table = architecture.module_table(model, TINY, 2, 4).set_index("name")["output shape"]
    hidden = next(n for n in ("trf_blocks.0.ff.hidden", "trf_blocks.0.hidden") if n in tr)
    pairs = {"tok_emb": "tok_emb", "pos_emb": "pos_emb", "drop_emb": "drop_emb", "trf_blocks.0": "trf_blocks.0.output",
             "trf_blocks.0.norm1": "trf_blocks.0.norm1", "trf_blocks.0.att": "trf_blocks.0.att.out",
             "trf_blocks.0.att.dropout": "trf_blocks.0.att.weights", "trf_blocks.0.ff": "trf_blocks.0.ff.out",
             "trf_blocks.0.ff.layers.1": hidden, "final_norm": "final_norm", "out_head": "logits", "(model)": "logits"}
    for module, name in pairs.items():
        assert _shape(table[module]) == tr[name].shape, module


def test_skeleton_table_has_placeholder_blocks(tiny_skeleton):
    model, _ = tiny_skeleton
    table = architecture.module_table(model, TINY, 2, 4).set_index("name")
    assert table.loc["trf_blocks.1", "class"] == "DummyTransformerBlock"
    assert table.loc["trf_blocks.1", "parameters"] == 0
    assert table.loc["final_norm", "class"].startswith("DummyLayerNorm")
    assert "returns its input" in table.loc["final_norm", "what it does"]


def test_weight_tying_is_read_from_the_model():
    torch.manual_seed(0)
    model = GPTModel(TINY)
    assert not architecture.ties_out_head(model)
    model.out_head.weight = model.tok_emb.weight
    assert architecture.ties_out_head(model)
    table = architecture.module_table(model, TINY, 1, 1)
    assert table["parameters"].iloc[0] == total_parameters(TINY, tied=True)


# --- code and status of the components --------------------------------------------------------


def test_sources_show_the_seed_placeholders_and_the_real_code():
    assert architecture.source("DummyTransformerBlock").rstrip().endswith("return x")
    assert "def forward(self, x):" in architecture.source("DummyLayerNorm")
    assert "torch.sqrt(var + self.eps)" in architecture.source("LayerNorm")
    assert "attn_scores = queries @ keys.transpose(2, 3)" in architecture.source("MultiHeadAttention")
    assert "x = x + shortcut" in architecture.source("TransformerBlock")
    assert "torch.zeros_like(x)" in architecture.source("PlaceholderSublayer")


@pytest.mark.parametrize("kind, parts, expected", [
    (SKELETON, ALL_PARTS, {"TransformerBlock": "placeholder", "LayerNorm": "placeholder", "GELU": "absent",
                           "FeedForward": "absent", "MultiHeadAttention": "absent"}),
    (GPT, ALL_PARTS, dict.fromkeys(architecture.COMPONENTS, "real")),
    (GPT, frozenset({"attention"}), {"TransformerBlock": "real", "LayerNorm": "placeholder", "GELU": "absent",
                                      "FeedForward": "placeholder", "MultiHeadAttention": "real"}),
])
def test_component_status(kind, parts, expected):
    assert {c: architecture.component_status(c, kind, parts) for c in architecture.COMPONENTS} == expected


# --- figures -----------------------------------------------------------------------------------


def test_stats_figure_draws_each_point_across_the_blocks(tiny_gpt):
    _, tr = tiny_gpt
    table = stats.activation_stats(tr, stats.residual_names(TINY["n_layers"]))
    fig = mc.stats_figure(table, "std")
    by_name = {t.name: t for t in fig.data}
    assert len(fig.data) == 6  # input, norm1, resid_mid, norm2, output, final_norm
    inputs = by_name[mc.POINT_LABELS["input"]]
    assert list(inputs.x) == ["block 0", "block 1"]
    assert list(inputs.y) == pytest.approx(table[table["point"] == "input"]["std"].tolist())
    assert list(by_name["final_norm"].x) == ["final_norm"]
    assert "standard deviation" in fig.layout.title.text and fig.layout.xaxis.title.text
    assert "std" in inputs.hovertemplate and "rms" in inputs.hovertemplate
    with pytest.raises(ValueError):
        mc.stats_figure(table, "median")


def test_block_change_figure(tiny_gpt):
    _, tr = tiny_gpt
    changes = stats.block_changes(tr, TINY["n_layers"])
    fig = mc.block_change_figure(changes)
    assert list(fig.data[0].y) == pytest.approx(changes["relative_change"].tolist())
    assert list(fig.data[0].x) == ["0", "1"] and "trf_blocks.%{x}" in fig.data[0].hovertemplate
    assert fig.layout.title.text and fig.layout.yaxis.title.text


def test_model_figures_are_small_for_48_blocks():
    rng = np.random.default_rng(1)
    values = {n: rng.normal(size=(1, 8, 16)).astype(np.float32) for n in stats.residual_names(48)}
    figs = [mc.stats_figure(stats.activation_stats(values, stats.residual_names(48))),
            mc.block_change_figure(stats.block_changes(values, 48)),
            mc.parameters_figure(mc.parameter_table(PRESETS["gpt2-xl (1558M)"]))]
    assert sum(len(f.to_json()) for f in figs) < 100_000
