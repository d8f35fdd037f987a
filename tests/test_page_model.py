"""The Model page: the architecture, the parameter counts and the residual stream are the model's own."""

import numpy as np
import pytest
from apptest_helpers import charts, errors, run_page, texts
from plotly_arrays import array

from gptviz.build import GPT, SKELETON, ModelSpec, build_model
from gptviz.config import PRESETS, config_key
from gptviz.tokenizer import encode
from gptviz.trace import trace

PAGE = "pages/3_Model.py"
TINY_NAME = "tiny (teaching)"
TINY = PRESETS[TINY_NAME]
BATCH = [encode("Every effort moves you"), encode("Every day holds a")]


def tiny_page(**params):
    return run_page(PAGE, preset=TINY_NAME, **params)


def metrics(at) -> dict:
    return {m.label: m.value for m in at.metric}


def table(at, first_column: str):
    return next(df.value for df in at.dataframe if df.value.columns[0] == first_column)


def independent_trace(kind: str):
    """The page's numbers, computed again outside the app: the same seed, the same dropout masks."""
    built = build_model(ModelSpec(kind, config_key(TINY)))
    return trace(built.model, BATCH, dropout_generator=built.dropout_generator())


@pytest.fixture(scope="module")
def default():
    return run_page(PAGE)


@pytest.fixture(scope="module")
def tiny_gpt():
    return tiny_page(model="gpt")


def test_default_124m_skeleton(default):
    at = default
    assert errors(at) == []
    shown = metrics(at)
    assert shown["parameters in this model"] == "77,981,184"  # tok_emb + pos_emb + out_head
    assert shown["without weight tying"] == "77,981,184"
    page = texts(at)
    assert "163,009,536 − 38,597,376 = 124,412,160" in page  # the real GPTModel of GPT_CONFIG_124M
    assert "equals `trf_blocks.i.input` exactly, value for value, in all 12 blocks" in page
    assert "returns its input too" in page
    modules = table(at, "module").set_index("name")
    assert modules.loc["trf_blocks.11", "class"] == "DummyTransformerBlock"
    assert modules.loc["out_head", "output shape"] == "2 x 4 x 50257"
    assert modules.loc["(model)", "parameters"] == 77_981_184
    stream = table(at, "name")
    assert stream["rms"].nunique() == 1  # placeholders: the stream passes through untouched


def test_tiny_gpt_stream_statistics_equal_an_independent_trace(tiny_gpt):
    at = tiny_gpt
    assert errors(at) == []
    tr = independent_trace(GPT)
    stream = table(at, "name").set_index("name")
    for name in ("trf_blocks.0.input", "trf_blocks.0.resid_mid", "trf_blocks.1.norm2", "final_norm"):
        x = tr[name].astype(np.float64)
        assert stream.loc[name, "rms"] == pytest.approx(np.sqrt((x**2).mean()), rel=1e-6), name
        assert stream.loc[name, "max"] == pytest.approx(x.max(), rel=1e-6)
    assert (stream.loc[["trf_blocks.0.norm1", "trf_blocks.1.norm2", "final_norm"], "token_std_mean"]
            .to_numpy() == pytest.approx(1.0, abs=1e-3))
    line = next(c for c in charts(at) if "residual stream through" in c["layout"]["title"]["text"])
    by_name = {t["name"]: t for t in line["data"]}
    rms_inputs = [np.sqrt((tr[f"trf_blocks.{i}.input"].astype(np.float64) ** 2).mean()) for i in range(2)]
    assert array(by_name["input (x entering the block)"]["y"]).tolist() == pytest.approx(rms_inputs, rel=1e-6)


def test_tiny_gpt_blocks_change_the_stream_by_the_traced_amount(tiny_gpt):
    at = tiny_gpt
    tr = independent_trace(GPT)
    changes = table(at, "block")
    assert not changes["unchanged"].any()
    x_in, x_out = tr["trf_blocks.0.input"].astype(np.float64), tr["trf_blocks.0.output"].astype(np.float64)
    expected = np.linalg.norm(x_out - x_in) / np.linalg.norm(x_in)
    assert changes["relative_change"].iloc[0] == pytest.approx(expected, rel=1e-6)
    assert "2 of 2 blocks change the stream" in texts(at)
    assert "stay at mean 0 and std 1" in texts(at)


def test_tiny_gpt_parameters(tiny_gpt):
    shown = metrics(tiny_gpt)
    d, v = TINY["emb_dim"], TINY["vocab_size"]
    model = build_model(ModelSpec(GPT, config_key(TINY))).model
    assert shown["parameters in this model"] == f"{sum(p.numel() for p in model.parameters()):,}"
    assert shown["with weight tying"] == f"{sum(p.numel() for p in model.parameters()) - d * v:,}"
    bars = next(c for c in charts(tiny_gpt) if "Parameters per component" in c["layout"]["title"]["text"])
    assert dict(zip(bars["data"][0]["y"], array(bars["data"][0]["x"])))["tok_emb"] == v * d


def test_tiny_skeleton_placeholders_return_their_input():
    at = tiny_page()
    assert errors(at) == []
    changes = table(at, "block")
    assert changes["unchanged"].all() and (changes["max_abs_change"] == 0).all()
    tr = independent_trace(SKELETON)
    stream = table(at, "name").set_index("name")
    x = tr["drop_emb"].astype(np.float64)
    assert stream.loc["trf_blocks.1.output", "rms"] == pytest.approx(np.sqrt((x**2).mean()), rel=1e-6)
    assert "Every line is flat" in texts(at)
    assert "Your model runs the placeholder `DummyTransformerBlock` instead of `TransformerBlock`." in texts(at)


def test_mix_shows_which_parts_are_placeholders():
    at = tiny_page(model="mix", parts=["attention"])
    assert errors(at) == []
    page = texts(at)
    assert "Your model runs the placeholder `DummyLayerNorm` instead of `LayerNorm`." in page
    assert "Your model runs the placeholder `PlaceholderSublayer` instead of `FeedForward`." in page
    assert "Your model runs the real `MultiHeadAttention`." in page
    assert "The norms here are placeholders" in page
    modules = table(at, "module").set_index("name")
    assert modules.loc["trf_blocks.0.ff", "class"] == "PlaceholderSublayer"


def test_all_blocks_toggle_and_statistic_from_the_link():
    at = tiny_page(model="gpt", all_blocks="true", stat="min")
    assert errors(at) == []
    assert "trf_blocks.1.att.W_query" in set(table(at, "module")["name"])
    assert any("minimum" in c["layout"]["title"]["text"] for c in charts(at))


def test_malformed_statistic_falls_back_to_rms():
    at = tiny_page(model="gpt", stat="median", all_blocks="maybe")
    assert errors(at) == []
    assert any("RMS" in c["layout"]["title"]["text"] for c in charts(at))
    assert "trf_blocks.1.att.W_query" not in set(table(at, "module")["name"])


def test_bad_config_gives_the_message():
    at = run_page(PAGE, cfg_emb_dim="770")
    assert errors(at) == [] and charts(at) == []
    assert "must be divisible by n_heads" in texts(at)


def test_empty_and_long_texts():
    at = tiny_page(text="", text2="")
    assert errors(at) == [] and charts(at) == []
    assert "Type some text" in texts(at)
    at = tiny_page(model="gpt", text="word " * 80, text2="")
    assert errors(at) == []
    assert "only its first 64 tokens are used" in texts(at)
    assert table(at, "module").set_index("name").loc["out_head", "output shape"] == "1 x 64 x 50257"


def test_trained_checkpoint_with_a_tied_head(tmp_path):
    import torch

    from gptviz.config import total_parameters
    from gptviz.models import GPTModel
    from gptviz.weights import save_gpt2

    torch.manual_seed(0)
    model = GPTModel({**TINY, "qkv_bias": True})
    model.out_head.weight = model.tok_emb.weight  # GPT-2's tying: one matrix
    directory = save_gpt2(model, tmp_path / "tiny-gpt2")
    at = run_page(PAGE, model="pretrained", weights_dir=str(directory))
    assert errors(at) == []
    tied = total_parameters({**TINY, "qkv_bias": True}, tied=True)
    assert metrics(at)["parameters in this model"] == f"{tied:,}"
    assert "**This model is tied**" in texts(at)
