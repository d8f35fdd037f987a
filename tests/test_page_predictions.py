"""The Predictions page, run headlessly as a shared link would open it."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from apptest_helpers import charts, errors, run_page, texts
from gptviz import predictions as P
from gptviz import tokenizer
from test_predictions import assert_prints_like_seed, seed_logits  # noqa: F401 (a fixture)

PAGE = "pages/5_Predictions.py"
LONG_TEXT = "The quick brown fox jumps over the lazy dog while the cat sleeps. " * 70  # about 1000 tokens


def array(value) -> np.ndarray:
    """A figure array from its JSON spec: plotly sends numpy arrays as base64 typed arrays."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(data))).split(",")]  # "4, 20"
        return data.reshape(shape)
    return np.asarray(value)


@pytest.fixture(scope="module")
def default_page():
    return run_page(PAGE)


def code_blocks(at) -> list[str]:
    return [c.value for c in at.get("code")]


def test_default_page_prints_the_seeds_logits(default_page):
    at = default_page
    assert not errors(at)
    printed = [c for c in code_blocks(at) if c.startswith("Output shape:")]
    assert len(printed) == 1
    assert_prints_like_seed(printed[0])


def test_default_next_token_is_the_argmax_of_the_seeds_model(default_page, seed_logits):
    expected = seed_logits[:, -1, :].argmax(-1)  # computed outside the app
    assert f"idx_next = tensor({[[int(i)] for i in expected]})" in "\n".join(code_blocks(default_page))
    page = texts(default_page)
    for text, token in zip(("Every effort moves you", "Every day holds a"), expected):
        assert f"**{tokenizer.bidi_isolated(text)}** → **`{tokenizer.token_label(int(token))}`** (id {token}," in page
    bars = charts(default_page)[0]["data"]
    assert len(bars) == 4  # four positions, one panel each
    assert bars[3]["y"][0] == f"1. {tokenizer.token_label(int(expected[0]))}"


def test_default_charts_show_the_traced_numbers(default_page, seed_logits):
    bars, heat = charts(default_page)[:2]
    row = seed_logits[0]
    top = P.top_k(row, 5)
    np.testing.assert_allclose(array(bars["data"][3]["x"]), top.probs[3], rtol=1e-4)
    columns = [int(x.rsplit("#", 1)[1]) for x in heat["data"][0]["x"]]
    np.testing.assert_allclose(array(heat["data"][0]["z"]), row[:, columns], atol=1e-5)
    np.testing.assert_allclose(array(heat["data"][0]["customdata"]), P.softmax(row)[:, columns], rtol=1e-4)
    assert heat["data"][0]["y"][1] == "after '␣effort' (pos 1)"
    assert len(charts(default_page)) == 2  # the whole vocabulary only when asked


def test_second_batch_row_and_a_bad_row_in_the_link(seed_logits):
    at = run_page(PAGE, pred_row="1")
    heat = charts(at)[1]["data"][0]
    assert heat["y"][3] == "after '␣a' (pos 3)"
    columns = [int(x.rsplit("#", 1)[1]) for x in heat["x"]]
    np.testing.assert_allclose(array(heat["z"]), seed_logits[1][:, columns], atol=1e-5)
    at = run_page(PAGE, pred_row="7")
    assert not errors(at) and charts(at)[1]["data"][0]["y"][0] == "after 'Every' (pos 0)"


@pytest.mark.parametrize(
    ("params", "k", "temperature", "warnings"),
    [
        ({"k": "1", "temperature": "0.05"}, 1, 0.05, []),
        ({"k": "50", "temperature": "5"}, 50, 5.0, []),
        ({"k": "99", "temperature": "0"}, 50, 0.05, ["`k=99` in the link is outside 1 to 50: showing k = 50.",
                                                     "τ = 0 is greedy decoding"]),
        ({"k": "-4", "temperature": "80"}, 1, 5.0, ["showing k = 1.", "showing temperature = 5."]),
        ({"k": "abc", "temperature": "nan"}, 5, 1.0, ["`k=abc` in the link is not a number: showing k = 5.",
                                                      "`temperature=nan` in the link is not a number"]),
    ],
)
def test_k_and_temperature_at_and_beyond_their_limits(params, k, temperature, warnings, seed_logits):
    at = run_page(PAGE, **params)
    assert not errors(at)
    assert at.slider(key="k").value == k and at.slider(key="temperature").value == pytest.approx(temperature)
    shown = [w.value for w in at.warning]
    assert len(shown) == len(warnings) and all(any(w in s for s in shown) for w in warnings), shown
    last = charts(at)[0]["data"][3]
    assert len(last["y"]) == k
    expected = P.top_k(seed_logits[0, 3], k, temperature).probs
    np.testing.assert_allclose(array(last["x"]), expected, rtol=1e-4)


def test_edited_text_from_the_link(seed_logits):
    at = run_page(PAGE, text="Hello, world", text2="")
    assert not errors(at)
    ids = tokenizer.encode("Hello, world")
    assert "idx_next = tensor([[" in "\n".join(code_blocks(at)) and "shape (1, 1)" in "\n".join(code_blocks(at))
    assert len(charts(at)[0]["data"]) == len(ids)
    assert charts(at)[1]["data"][0]["y"] == [f"after '{tokenizer.token_label(i)}' (pos {t})" for t, i in enumerate(ids)]
    assert "torch.Size([1, 3, 50257])" in "\n".join(code_blocks(at))


def test_bad_config_and_empty_text_explain_themselves():
    at = run_page(PAGE, cfg_emb_dim="770")
    assert not errors(at) and not charts(at)
    assert "emb_dim (770) must be divisible by n_heads (12)" in texts(at)
    at = run_page(PAGE, text="", text2="")
    assert not errors(at) and not charts(at)
    assert "Type some text" in texts(at)
    at = run_page(PAGE, text="   ", text2="")  # three spaces are real GPT-2 tokens: predictions after each
    assert not errors(at) and charts(at)[1]["data"][0]["y"][0] == "after '␣' (pos 0)"


def test_long_text_uses_a_position_selector_and_stays_light():
    at = run_page(PAGE, text=LONG_TEXT, full_vocab="true", k="50", position="-2")
    assert not errors(at)
    n = len(tokenizer.encode(LONG_TEXT)[:1024])
    assert at.slider(key="position").value == 0  # snapped to the nearest valid position
    specs = [el.proto.spec for el in at.get("plotly_chart")]
    assert len(specs) == 3
    assert sum(len(s) for s in specs) < 1.5e6, [len(s) for s in specs]
    bars, heat, full = (json.loads(s) for s in specs)
    assert len(bars["data"]) == 1 and "after 'The' (pos 0)" in bars["layout"]["annotations"][0]["text"]
    assert f"{n} positions x 40 of the 50,257" in heat["layout"]["title"]["text"]
    assert "All 50,257 vocabulary columns" in full["layout"]["title"]["text"]
    at = run_page(PAGE, text=LONG_TEXT[:200], position="99999")
    n = len(tokenizer.encode(LONG_TEXT[:200]))
    assert at.slider(key="position").value == n - 1 and "showing position = " in texts(at)


def test_a_right_to_left_override_in_the_text_stays_inside_it():
    # U+202E reverses everything after it on its line: the page's own words must not follow it.
    at = run_page("pages/5_Predictions.py", text="evil \u202eoverride", text2="")
    assert not errors(at)
    line = next(m.value for m in at.markdown if "out of" in m.value and "→" in m.value)
    inside, _, after = line.partition("\u2069")
    assert "\u2068" in inside and "\u202e" in inside
    assert "\u202e" not in after and "candidates" in after
