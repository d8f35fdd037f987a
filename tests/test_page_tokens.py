"""The Tokens page as a shared link opens it: chips, the printed batch, the table, bad input."""

import base64

import numpy as np
import pytest

from apptest_helpers import charts, errors, run_page, texts
from gptviz.tokenizer import ENDOFTEXT_ID, encode

PAGE = "pages/1_Tokens.py"
SEED_BATCH_PRINT = "tensor([[6109, 3626, 6100,  345],\n        [6109, 1110, 6622,  257]])"


def plotly_values(data) -> list:
    """A figure array as sent to the browser: a list, or base64 typed-array bytes."""
    if isinstance(data, dict):
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"]).tolist()
    return list(data)


def chips(at) -> str:
    return "\n".join(el.value for el in at.get("html"))


def printed_batch(at) -> str:
    return at.get("code")[1].value  # [0] is the seed's code


def table(at):
    return at.get("dataframe")[0].value


@pytest.fixture(scope="module")
def default():
    return run_page(PAGE)


def test_default_shows_the_seed_ids_and_its_printed_batch(default):
    assert errors(default) == []
    body = chips(default)
    for piece, token_id in [("Every", 6109), ("␣effort", 3626), ("␣moves", 6100), ("␣you", 345), ("␣holds", 6622)]:
        assert f'{piece}</span><span class="gv-i">{token_id}</span>' in body
    assert printed_batch(default) == SEED_BATCH_PRINT
    assert table(default)["id"].tolist() == [6109, 3626, 6100, 345, 6109, 1110, 6622, 257]
    assert "torch.Size([2, 4])" in texts(default)
    assert "tiktoken.get_encoding" in default.get("code")[0].value


def test_default_stats_and_chart(default):
    metrics = {m.label: m.value for m in default.get("metric")}
    assert metrics["tokens in row 0"] == "4" and metrics["characters per token"] == "5.50"
    assert metrics["batch shape"] == "2 x 4"
    assert "context_length = 1,024" in default.get("progress")[0].proto.text
    (fig,) = charts(default)
    assert [plotly_values(trace["y"]) for trace in fig["data"]] == [[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]]


def test_edited_text_makes_a_one_row_batch():
    at = run_page(PAGE, text="Hello world", text2="")
    assert errors(at) == []
    assert printed_batch(at) == "tensor([[15496,   995]])"
    assert table(at)["id"].tolist() == [15496, 995]


def test_emoji_cjk_and_zwj_show_no_replacement_characters():
    text = "家族 👨\u200d👩\u200d👧 café 🤖!"
    at = run_page(PAGE, text=text, text2="")
    assert errors(at) == []
    body = chips(at)
    assert "\ufffd" not in body and "\ufffd" not in "".join(table(at)["piece"])
    for char in ("家", "族", "👨", "👩", "👧", "🤖"):
        assert char in body
    assert "⟨U+200D⟩" in body and "2 tokens" in body  # the joiner is visible, split characters grouped
    assert table(at)["id"].tolist() == encode(text)
    assert any("group several tokens" in c.value and "␣🤖 (5 bytes:" in c.value for c in at.caption)


def test_endoftext_is_one_special_chip():
    at = run_page(PAGE, text="The end.<|endoftext|>A new text", text2="")
    assert errors(at) == []
    assert ENDOFTEXT_ID in table(at)["id"].tolist()
    assert f'gv-sp" title="special token"><span class="gv-t">&lt;|endoftext|&gt;</span><span class="gv-i">{ENDOFTEXT_ID}<' in chips(at)


def test_html_in_the_text_is_escaped():
    at = run_page(PAGE, text='<script>alert("hi")</script><img src=x onerror=alert(1)>', text2="")
    assert errors(at) == []
    body = chips(at).split("</style>", 1)[1]
    assert "<script" not in body and "<img" not in body
    assert "&lt;" in body and "&quot;" in body


def test_newlines_and_spaces_are_visible():
    at = run_page(PAGE, text="one\ntwo  three", text2="")
    body = chips(at)
    assert "↵" in body and "␣three" in body and 'class="gv-br"' in body


def test_bad_config_shows_the_error_and_keeps_the_tokens():
    at = run_page(PAGE, cfg_emb_dim="770")
    assert errors(at) == []
    assert any("divisible by n_heads" in e.value for e in at.error)
    assert printed_batch(at) == SEED_BATCH_PRINT
    assert "6109" in chips(at)
    assert "the config in the sidebar is invalid" in at.get("progress")[0].proto.text


def test_text_longer_than_the_context_is_cut_with_a_note():
    text = " ".join(f"w{i}" for i in range(100))
    at = run_page(PAGE, text=text, text2="", preset="tiny (teaching)")
    assert errors(at) == []
    assert any("only its first 64 tokens" in w.value for w in at.warning)
    assert len(table(at)) == 64 and table(at)["id"].tolist() == encode(text)[:64]
    assert f"Text 1 has {len(encode(text))} tokens" in at.get("progress")[0].proto.text


def test_empty_text_gives_a_hint():
    at = run_page(PAGE, text="", text2="")
    assert errors(at) == []
    assert "Type some text" in texts(at)


def test_empty_first_text_beside_the_default_second_gives_only_the_hint():
    """Not "the two texts have 0 and 4 tokens": there is no batch to explain, only a text to type."""
    at = run_page(PAGE, text="")  # the second text keeps its default, "Every day holds a"
    assert errors(at) == []
    assert "Type some text" in texts(at)
    assert "The two texts have" not in texts(at)


def test_whitespace_only_text_shows_its_space_tokens():
    at = run_page(PAGE, text="   ", text2="")
    assert errors(at) == []
    assert table(at)["id"].tolist() == encode("   ") and "␣" in chips(at)


def test_unequal_rows_use_the_first_text():
    at = run_page(PAGE, text="Every effort moves you", text2="Hi")
    assert errors(at) == []
    assert printed_batch(at) == "tensor([[6109, 3626, 6100,  345]])"
    assert any("torch.stack needs rows of equal length" in w.value for w in at.warning)


@pytest.mark.parametrize("params", [{"model": "nope", "seed": "abc"}, {"cfg_context_length": "x", "preset": "??"}])
def test_malformed_query_params_never_raise(params):
    at = run_page(PAGE, **params)
    assert errors(at) == []
    assert printed_batch(at) == SEED_BATCH_PRINT


def test_a_full_context_prints_like_torch_and_stays_light():
    import torch

    text = " ".join(f"word{i} the" for i in range(600))  # about 1800 tokens: cut to 1024
    at = run_page(PAGE, text=text, text2="")
    assert errors(at) == []
    ids = encode(text)[:1024]
    assert printed_batch(at) == repr(torch.tensor([ids]))  # torch summarizes past 1000 numbers
    assert ",  ...," in printed_batch(at)
    assert len(table(at)) == 1024
    assert len(chips(at)) < 300_000 and sum(len(el.proto.spec) for el in at.get("plotly_chart")) < 100_000
