"""The Tokens page's builders: torch's print format, chips (escaped), the token table, the id chart."""

import json

import numpy as np
import pytest
import torch

from gptviz.charts import tokens as tc
from gptviz.tokenizer import ENDOFTEXT_ID, encode, token_groups

SEED_BATCH_PRINT = "tensor([[6109, 3626, 6100,  345],\n        [6109, 1110, 6622,  257]])"


def test_torch_repr_prints_the_seed_batch_exactly():
    batch = [encode("Every effort moves you"), encode("Every day holds a")]
    assert tc.torch_repr(batch) == SEED_BATCH_PRINT


@pytest.mark.parametrize(
    "shape",
    [(4,), (1, 1), (1, 4), (2, 4), (3, 37), (2, 500), (1, 1000), (1, 1001), (2, 1024), (9, 9), (7, 200), (2, 3, 5), (0,), (1, 0)],
)
@pytest.mark.parametrize("high", [10, 1000, 50257])
def test_torch_repr_matches_torch_for_random_ids(shape, high):
    # Widths, wrapping at 80 columns and the "..." summary past 1000 elements all match torch.
    ids = torch.randint(0, high, shape, generator=torch.Generator().manual_seed(sum(shape) + high))
    assert tc.torch_repr(ids.numpy()) == repr(ids)


def test_chips_escape_html_and_keep_every_id():
    text = '<script>alert("x")</script><b onclick="evil()">bold</b> & more'
    groups = token_groups(text)
    page = tc.chips_html([groups])
    body = page.split("</style>", 1)[1]
    assert "<script" not in body and "<b " not in body and "onclick=\"evil" not in body
    assert "&lt;" in body and "&gt;" in body and "&amp;" in body and "&quot;" in body
    for group in groups:
        assert f'<span class="gv-i">{" ".join(map(str, group.ids))}</span>' in body


def test_chips_show_whitespace_newlines_and_the_special_token():
    groups = token_groups("Hi there\nnext<|endoftext|>")
    page = tc.chips_html([groups])
    assert "␣there" in page and "↵" in page
    assert page.count('class="gv-br"') == 1  # the row breaks after the newline, as the text does
    assert 'class="gv-chip gv-sp"' in page and "&lt;|endoftext|&gt;" in page and str(ENDOFTEXT_ID) in page


def test_a_character_split_over_tokens_is_one_chip_with_all_its_ids():
    groups = token_groups("🤖")
    (robot,) = groups
    assert len(robot.ids) >= 2
    page = tc.chips_html([groups])
    assert page.count('class="gv-chip') == 1
    assert " ".join(map(str, robot.ids)) in page and f"{len(robot.ids)} tokens" in page
    assert "\ufffd" not in page
    note = tc.split_note(groups)
    assert note.startswith("1 chip groups several tokens") and f"🤖 (4 bytes: {' '.join(map(str, robot.ids))})" in note
    assert tc.split_note(token_groups("plain words")) == ""
    repeated = tc.split_note(token_groups("🤖" * 12))
    assert repeated.startswith("12 chips") and repeated.count("🤖") == 1  # each distinct character once
    many = tc.split_note(token_groups("家族👨👩👧🤖😀😎🎉🚀"), limit=8)
    assert many.startswith("10 chips") and many.endswith("and 2 more.")


def test_zero_width_joiner_is_made_visible():
    assert tc.visible_text("👨\u200d👩 a\n") == "👨⟨U+200D⟩👩␣a↵"
    assert "⟨U+200D⟩" in tc.chips_html([token_groups("👨\u200d👩")])


def test_row_groups_cut_inside_a_character_shows_bytes_not_replacement_chars():
    text = "ok 🤖"
    n = len(encode(text))
    full = tc.row_groups(text, n)
    assert [g.ids for g in full] == [g.ids for g in token_groups(text)]
    cut = tc.row_groups(text, n - 1)
    assert sum(len(g.ids) for g in cut) == n - 1
    assert cut[-1].text.startswith("<") and "\ufffd" not in cut[-1].text
    assert tc.row_groups(text, 0) == []


def test_token_table_has_one_line_per_token_with_bytes_and_spans():
    rows = [token_groups("Every effort moves you"), token_groups("Hi 🤖")]
    table = tc.token_table(rows)
    assert list(table.columns) == ["row", "position", "id", "piece", "bytes (hex)", "chars"]
    assert table["id"].tolist() == encode("Every effort moves you") + encode("Hi 🤖")
    first = table.iloc[1]
    assert (first["piece"], first["bytes (hex)"], first["chars"]) == ("␣effort", "20 65 66 66 6f 72 74", "5-12")
    robot = table[table["row"] == 1].iloc[1:]  # " 🤖": a space and 4 bytes, over several tokens
    assert len(robot) >= 2 and set(robot["chars"]) == {"2-4"}
    assert "".join(robot["bytes (hex)"]).replace(" ", "") == " 🤖".encode().hex()
    assert not table["piece"].str.contains("\ufffd").any()


def test_token_table_caps_rows():
    groups = token_groups("a " * (tc.MAX_SHOWN_TOKENS + 50))
    assert len(tc.token_table([groups])) == tc.MAX_SHOWN_TOKENS


def test_chars_per_token():
    assert tc.chars_per_token("Every effort moves you", 4) == pytest.approx(5.5)
    assert tc.chars_per_token("", 0) == 0.0


def test_token_id_bars_labels_and_values():
    ids = [[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]]
    fig = tc.token_id_bars(ids, [["Every", "␣effort", "␣moves", "␣you"], ["Every", "␣day", "␣holds", "␣a"]])
    assert len(fig.data) == 2
    assert list(fig.data[1].y) == ids[1]
    assert "2 x 4" in fig.layout.title.text
    assert "position" in fig.layout.xaxis.title.text and "token id" in fig.layout.yaxis.title.text
    assert "id %{y}" in fig.data[0].hovertemplate


def test_token_id_bars_payload_for_a_full_context_and_thinning():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50257, (2, 1024))
    labels = [[f"t{i}" for i in range(1024)]] * 2
    assert len(tc.token_id_bars(ids, labels).to_json()) < 150_000
    long = rng.integers(0, 50257, (1, 5000))
    fig = tc.token_id_bars(long, [[str(i) for i in range(5000)]])
    assert len(fig.data[0].x) <= 2000 and "showing" in fig.layout.title.text


def test_chips_payload_for_a_full_context():
    text = " ".join(f"word{i}" for i in range(600))
    groups = tc.row_groups(text, 1024)
    assert sum(len(g.ids) for g in groups) == 1024
    assert len(tc.chips_html([groups, groups])) < 400_000
    assert json.dumps(tc.token_table([groups, groups]).to_dict("records"))  # serialisable
