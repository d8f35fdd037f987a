"""Generate: the next token, step by step: logits, temperature, top-k, top-p, softmax, the draw."""

import time

import streamlit as st

from gptviz import stepper, tokenizer, ui
from gptviz.charts import generate as gen_charts
from gptviz.charts import tokens as token_charts

# Show the text while it grows only once a step takes this long: steps read from the logits
# cache (moving a slider) take microseconds and are drawn once, at the end.
STREAM_AFTER_S = 0.03

inputs = ui.setup("Generate")

st.title("Generate: one token at a time")
st.markdown(
    "A GPT writes by repeating one step: run the text so far through the model, take the logits at the "
    "**last** position, turn them into a choice of next token, append it, and go again. Chapter 4's "
    "`generate_text_simple` always takes the most likely token (*greedy*). Sampling instead divides the "
    "logits by a **temperature**, keeps only the **top-k** most likely tokens and the **top-p** nucleus "
    "(the fewest tokens holding that much probability), applies softmax and draws. Below, every step of "
    "that pipeline for your first text; pick another candidate at any step to continue from there."
)
ui.seed_code(
    "for _ in range(max_new_tokens):\n"
    "    idx_cond = idx[:, -context_size:]          # crop to the supported context\n"
    "    with torch.no_grad():\n"
    "        logits = model(idx_cond)\n"
    "    logits = logits[:, -1, :]                  # only the last position predicts\n"
    "    probas = torch.softmax(logits, dim=-1)\n"
    "    idx_next = torch.argmax(probas, dim=-1, keepdim=True)\n"
    "    idx = torch.cat((idx, idx_next), dim=1)",
    "The course's generate_text_simple (chapter 4). Temperature, top-k and top-p come in chapter 5.",
)
ui.show_notes(inputs)
ui.require_model(inputs)
ui.require_tokens(inputs)
if inputs.spec.kind != "pretrained":
    st.info(
        "This model's weights are random (nothing is trained until chapter 5), so the text it writes is "
        "gibberish: the point here is the mechanics. Load trained GPT-2 weights in the sidebar "
        "(*Model: pretrained*) to see sensible continuations.",
        icon=":material/casino:",
    )

controls = st.columns([2, 2, 2, 2, 2])
# 6 by default, as chapter 4 runs generate_text_simple (max_new_tokens=6): each step is a pass
# over all the weights, ~40 ms for the 124M GPT on one core, so the default sets the page's time.
steps_n = ui.clamped_widget(
    controls[0].slider, "Tokens to generate", key="gen_steps", min_value=1, max_value=40, value=6,
    help="max_new_tokens. Chapter 4 generates 6; each one is another pass through the model.",
)
temperature = ui.clamped_widget(
    controls[1].slider, "temperature (0 = greedy)", key="gen_temperature", min_value=0.0, max_value=2.0,
    value=0.0, step=0.05, help="0 takes the argmax, as generate_text_simple does. Below 1 sharpens, above 1 flattens.",
)
top_k = ui.clamped_widget(
    controls[2].number_input, "top_k (0 = off)", key="gen_top_k", min_value=0, max_value=1000, value=0, step=1,
    help="Keep only the k largest logits; the rest get -inf before softmax.",
)
top_p = ui.clamped_widget(
    controls[3].slider, "top_p", key="gen_top_p", min_value=0.05, max_value=1.0, value=1.0, step=0.05,
    help="Keep the most likely tokens until their probability adds up to top_p (1 = keep all).",
)
sample_seed = ui.clamped_widget(
    controls[4].number_input, "sampling seed", key="gen_seed", min_value=0, max_value=2**31 - 1, value=123, step=1,
    help="Draws come from torch.Generator().manual_seed(seed): the same seed gives the same text.",
)
vocab_size = inputs.cfg["vocab_size"]
picks = stepper.parse_picks(st.query_params.get("gen_picks"), steps_n, vocab_size)

prompt = inputs.token_ids[0]


def generated_row(generated: list[int]) -> str:
    chips = token_charts.chips_html([tokenizer.groups_from_ids(generated)])
    return f'<div data-gv-generated="{len(generated)}">{chips}</div>'  # the attribute: benchmarks/_server.py


st.subheader("The text so far")
counts = st.empty()
counts.markdown(f"**{len(prompt)}** prompt tokens (first text) + up to **{steps_n}** generated, one per step:")
# Each new token costs a pass over all the weights (about 50 ms for the 124M GPT here), so the
# generated row is redrawn as the steps come (only it, not the prompt's row: every element and
# byte sent costs the browser, on the same cores); a keystroke meanwhile stops the run at the
# next step.
st.html(token_charts.chips_html([tokenizer.groups_from_ids(prompt)]))
chips = st.empty()
st.caption("First your prompt's tokens, then what the model appended, one chip per step.")
steps = []
shown_at = time.perf_counter()
for step in stepper.walk_steps(
    ui.logits_after(inputs.spec), prompt, steps_n, temperature=temperature,
    top_k=top_k or None, top_p=top_p, seed=sample_seed, picks=picks, eos_id=tokenizer.ENDOFTEXT_ID,
):
    steps.append(step)
    if time.perf_counter() - shown_at > STREAM_AFTER_S and len(steps) < steps_n:
        chips.html(generated_row([s.chosen for s in steps]))
        shown_at = time.perf_counter()
generated = [s.chosen for s in steps]
counts.markdown(f"**{len(prompt)}** prompt tokens (first text) + **{len(generated)}** generated:")
chips.html(generated_row(generated))
# A direction override typed in the prompt must not reverse the generated text after it.
st.code(tokenizer.fence_bidi(tokenizer.decode(prompt)) + tokenizer.decode(generated), language=None, wrap_lines=True)
if picks:
    st.caption(f"You overruled step(s) {', '.join(str(s + 1) for s in sorted(picks))}.")
    st.button("Clear my picks", on_click=lambda: st.query_params.pop("gen_picks", None))

ui.plot(gen_charts.run_figure(steps), key="gen_run")

st.subheader("Inside one step")
inspect = ui.clamped_widget(
    st.slider, "Step to inspect", key="gen_step", min_value=1, max_value=max(2, len(steps)), value=1,
) if len(steps) > 1 else 1
step = steps[min(inspect, len(steps)) - 1]
ui.plot(gen_charts.pipeline_figure(step, temperature, top_k, top_p), key="gen_pipeline")

chosen_label = tokenizer.token_label(step.chosen)
if step.overruled:
    why = (f"you picked **{chosen_label}** (rank {step.chosen_rank:,} by logit); the sampler had drawn "
           f"**{tokenizer.token_label(step.drawn)}**.")
elif temperature == 0:
    why = f"**{chosen_label}** has the largest logit, so argmax takes it (greedy)."
else:
    why = (f"**{chosen_label}** was drawn from the {step.kept:,} tokens left after top-k and top-p, "
           f"where it had probability {step.chosen_prob:.4f} (rank {step.chosen_rank:,} by logit).")
st.markdown(f"Step {step.index + 1} saw {step.prefix_len} tokens; " + why)

ids = [int(i) for i in step.candidates["ids"]]
choice = st.selectbox(
    "Continue with a different token at this step", ids, index=ids.index(step.chosen) if step.chosen in ids else 0,
    format_func=lambda i: f"{tokenizer.token_label(i)}  (#{i})", key=f"gen_choice_{step.index}_{step.chosen}",
)


def _overrule(step_index: int, token: int) -> None:
    # Later picks were made for a text that no longer exists: drop them.
    kept = {s: t for s, t in picks.items() if s < step_index}
    kept[step_index] = token
    st.query_params["gen_picks"] = stepper.format_picks(kept)


st.button(
    "Continue from here with this token", on_click=_overrule, args=(step.index, choice),
    disabled=choice == step.chosen, type="primary",
)
