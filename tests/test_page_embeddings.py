"""The Embeddings page: its numbers are the seed model's, its widgets survive any link."""

import numpy as np
import pytest
import torch

from apptest_helpers import charts, errors, run_page, texts
from plotly_arrays import array
from gptviz import GPT_CONFIG_124M, PRESETS, DummyGPTModel, GPTModel
from gptviz.tokenizer import encode

PAGE = "pages/2_Embeddings.py"
SEED_BATCH = torch.tensor([[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]])


@pytest.fixture(scope="module")
def seed_model():
    """The seed's own steps: torch.manual_seed(123); DummyGPTModel(GPT_CONFIG_124M); its first dropout."""
    torch.manual_seed(123)
    model = DummyGPTModel(GPT_CONFIG_124M)
    with torch.no_grad():
        x = model.tok_emb(SEED_BATCH) + model.pos_emb(torch.arange(4))
        drop_emb = model.drop_emb(x)  # training mode, the global RNG right after building: as the seed
    return model, x, drop_emb


ONE_TOKEN = {"emb_view": "One token"}  # the tab with the position widget and the vector table
PCA = {"emb_view": "In 2-D (PCA)"}


@pytest.fixture(scope="module")
def default():
    return run_page(PAGE)


@pytest.fixture(scope="module")
def one_token():
    return run_page(PAGE, **ONE_TOKEN)


def vector_table(at):
    return at.get("dataframe")[1].value  # [0] is the scale table


def position(at) -> int:
    return next(n.value for n in at.number_input if n.key == "emb_token")


def rounded(t) -> list:
    return np.round(t.detach().numpy().astype(np.float64), 4).tolist()


def test_default_numbers_equal_the_seed_model(one_token, seed_model):
    model, x, drop_emb = seed_model
    assert errors(one_token) == []
    table = vector_table(one_token)
    assert position(one_token) == 0
    n = table.shape[1]
    assert table.loc["tok_emb"].tolist() == rounded(model.tok_emb.weight[6109, :n])
    assert table.loc["tok_emb"].tolist()[:3] == [1.6146, 2.1622, 1.2770]  # what the seed's model holds
    assert table.loc["pos_emb"].tolist() == rounded(model.pos_emb.weight[0, :n])
    assert table.loc["tok_emb + pos_emb"].tolist() == rounded(x[0, 0, :n])
    assert table.loc["drop_emb"].tolist() == rounded(drop_emb[0, 0, :n])


def test_default_heatmaps_and_dropout_counts(default, seed_model):
    _, x, drop_emb = seed_model
    figs = charts(default)
    titles = [fig["layout"]["title"]["text"] for fig in figs]
    panels = next(fig for fig in figs if "(4, 768) matrices" in fig["layout"]["title"]["text"])
    assert "showing" not in panels["layout"]["title"]["text"]  # the default text: every value drawn
    assert [a["text"].split(":")[0] for a in panels["layout"]["annotations"]] == [
        "<b>tok_emb</b>", "<b>pos_emb</b>", "<b>tok_emb + pos_emb</b>"]
    z = [array(trace["z"]) for trace in panels["data"]]
    np.testing.assert_allclose(z[2], x[0].numpy(), atol=1e-6)  # the sum panel is the seed model's row 0
    np.testing.assert_allclose(z[0] + z[1], z[2], atol=1e-5)
    assert any(t.startswith("drop_emb / embeddings") for t in titles)
    metrics = {m.label: m.value for m in default.get("metric")}
    zeroed = int((drop_emb == 0).sum())
    assert metrics["entries zeroed"] == f"{zeroed:,} of 6,144"
    assert metrics["expected p x N"].startswith("614.4") and metrics["survivors scaled by"] == "1.1111"


def test_only_the_open_tab_is_computed():
    """The Dropout tab is open by default; the other tabs' figures are built only when opened."""
    default_titles = [fig["layout"]["title"]["text"] for fig in charts(run_page(PAGE))]
    assert not any("PCA" in t or "The vectors of token" in t for t in default_titles)
    at = run_page(PAGE, **PCA)
    assert errors(at) == []
    titles = [fig["layout"]["title"]["text"] for fig in charts(at)]
    assert any("PCA of tok_emb" in t for t in titles) and any("PCA of tok_emb + pos_emb" in t for t in titles)
    assert not any(t.startswith("drop_emb / embeddings") for t in titles)
    # "Every" opens both rows: one point in the tok_emb projection, one in the sum's too
    assert any("PCA of tok_emb: 7 distinct vectors" in t for t in titles)


def test_emb_token_picks_the_position_and_row(seed_model):
    model, _, _ = seed_model
    at = run_page(PAGE, emb_token="2", emb_row="row 1", **ONE_TOKEN)
    assert errors(at) == []
    assert position(at) == 2
    table = vector_table(at)
    assert table.loc["tok_emb"].tolist() == rounded(model.tok_emb.weight[6622, : table.shape[1]])  # "␣holds"
    assert table.loc["pos_emb"].tolist() == rounded(model.pos_emb.weight[2, : table.shape[1]])
    assert "token id **6622**" in texts(at)


@pytest.mark.parametrize("raw, expected", [("99", 3), ("4", 3), ("-1", 0), ("abc", 0), ("inf", 0), ("", 0), ("2.0", 2)])
def test_emb_token_out_of_range_in_the_url_is_clamped(raw, expected, seed_model):
    model, _, _ = seed_model
    at = run_page(PAGE, emb_token=raw, **ONE_TOKEN)
    assert errors(at) == []
    assert position(at) == expected
    token_id = SEED_BATCH[0, expected].item()
    assert vector_table(at).loc["tok_emb"].tolist() == rounded(model.tok_emb.weight[token_id, :8])


def test_position_is_clamped_when_the_text_gets_shorter():
    at = run_page(PAGE, emb_token="3", **ONE_TOKEN)
    assert position(at) == 3
    at.text_area(key="text").set_value("Hi").run()
    assert errors(at) == []
    assert position(at) == 0 and "token id **17250**" in texts(at)


def test_malformed_row_falls_back_to_row_0():
    at = run_page(PAGE, emb_row="row 7")
    assert errors(at) == []
    assert "Row 0:" in texts(at)


def test_dropout_off_says_drop_emb_equals_the_sum():
    at = run_page(PAGE, dropout="false")
    assert errors(at) == []
    assert "No dropout here" in texts(at)
    at = run_page(PAGE, dropout="false", **ONE_TOKEN)
    assert errors(at) == []
    assert "drop_emb" not in vector_table(at).index


def test_edited_text_one_row_and_gpt_model():
    at = run_page(PAGE, text="Hello world", text2="", model="gpt", preset="tiny (teaching)", emb_token="1",
                  **ONE_TOKEN)
    assert errors(at) == []
    assert not at.get("segmented_control")  # one row: nothing to choose
    torch.manual_seed(123)
    model = GPTModel(PRESETS["tiny (teaching)"])
    table = vector_table(at)
    assert table.loc["tok_emb"].tolist() == rounded(model.tok_emb.weight[encode(" world")[0], :8])
    assert table.loc["pos_emb"].tolist() == rounded(model.pos_emb.weight[1, :8])
    assert any("(2, 48)" in fig["layout"]["title"]["text"] for fig in charts(at))


def test_bad_config_gives_the_message():
    at = run_page(PAGE, cfg_emb_dim="770")
    assert errors(at) == []
    assert any("divisible by n_heads" in e.value for e in at.error)
    assert charts(at) == []


def test_empty_text_gives_a_hint():
    at = run_page(PAGE, text="", text2="")
    assert errors(at) == [] and "Type some text" in texts(at)


def test_long_text_stays_within_the_payload_budget():
    text = " ".join(f"word{i} the" for i in range(600))  # more than 1024 tokens: cut to the context
    for view in ("Dropout", "One token", "In 2-D (PCA)"):
        at = run_page(PAGE, text=text, text2="", emb_token="5000", emb_view=view)
        assert errors(at) == []
        if view == "One token":
            assert position(at) == 1023
        assert sum(len(el.proto.spec) for el in at.get("plotly_chart")) < 1_000_000, view


def test_position_survives_a_visit_to_another_page():
    at = run_page(PAGE, emb_token="2", **ONE_TOKEN)
    at.switch_page("pages/1_Tokens.py").run()
    assert errors(at) == []
    at.switch_page(PAGE).run()
    assert errors(at) == []
    assert position(at) in (0, 2)  # kept, or back at the default: never an error
