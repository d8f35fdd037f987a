"""The Generate page: the text, each step's pipeline, overrules and bad links."""

import json

import torch

from apptest_helpers import charts, errors, run_page, texts
from gptviz import DummyGPTModel, GPT_CONFIG_124M, decode, encode
from gptviz.generation import generate_text_simple

PAGE = "pages/6_Generate.py"
TINY = {"preset": "tiny (teaching)", "model": "gpt"}


def shown_text(at) -> str:
    return at.get("code")[-1].value


def test_default_page_writes_what_generate_text_simple_writes():
    at = run_page(PAGE)
    assert errors(at) == []
    torch.manual_seed(123)
    model = DummyGPTModel(GPT_CONFIG_124M).eval()
    prompt = encode("Every effort moves you")
    out = generate_text_simple(model, torch.tensor([prompt]), 6, 1024)  # chapter 4's max_new_tokens=6
    assert shown_text(at) == decode(out[0].tolist())
    specs = charts(at)
    assert [s["layout"]["title"]["text"].split(":")[0] for s in specs] == ["The run", "Step 1"]
    assert "argmax" in texts(at)


def test_sampling_settings_and_a_pick_from_the_link():
    at = run_page(PAGE, text="The cat", text2="", gen_temperature="1.2", gen_top_k="30", gen_seed="5",
                  gen_picks="1:464", gen_step="2", **TINY)
    assert errors(at) == []
    assert "You overruled step(s) 2" in texts(at)
    assert "you picked" in texts(at)
    pipeline = charts(at)[1]
    assert pipeline["layout"]["title"]["text"].startswith("Step 2")
    assert "top_k=30" in pipeline["layout"]["title"]["text"]


def test_continue_from_here_sets_the_pick_in_the_url():
    at = run_page(PAGE, text="Hello", text2="", gen_steps="3", **TINY)
    box = at.main.selectbox[0]
    box.select_index(1 if box.index == 0 else 0).run()
    next(b for b in at.main.button if b.label.startswith("Continue from here")).click().run()
    assert errors(at) == []
    picks = at.query_params["gen_picks"]
    picks = picks if isinstance(picks, str) else picks[0]
    assert picks.startswith("0:") and "You overruled step(s) 1" in texts(at)


def test_out_of_range_and_malformed_links_are_explained_not_raised():
    at = run_page(PAGE, gen_steps="999", gen_temperature="-3", gen_top_k="abc", gen_top_p="7",
                  gen_picks="x:y,0:99999999", **TINY)
    assert errors(at) == []
    warnings = " ".join(w.value for w in at.warning)
    assert "gen_steps=999" in warnings and "gen_temperature=-3" in warnings and "gen_top_k=abc" in warnings


def test_bad_config_and_empty_text_give_messages():
    at = run_page(PAGE, cfg_emb_dim="770")
    assert errors(at) == [] and "divisible by n_heads" in texts(at)
    at = run_page(PAGE, text="", text2="")
    assert errors(at) == [] and "Type some text" in texts(at)


def test_a_direction_override_in_the_prompt_does_not_reverse_the_generated_text():
    """U+202E typed in the prompt stays inside it (an isolate around the prompt); a prompt
    without one is shown exactly as the model reads it (the default test above)."""
    prompt = "abc \u202edef"
    at = run_page(PAGE, text=prompt, **TINY)
    assert errors(at) == []
    shown = shown_text(at)
    assert shown.startswith("\u2068" + prompt + "\u2069"), repr(shown[:20])
    assert len(shown) > len(prompt) + 2, "nothing was generated after the prompt"
