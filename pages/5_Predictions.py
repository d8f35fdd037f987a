"""Predictions: out_head's logits, softmax with a temperature, the top-k candidates at each
position, and the greedy next token the course's generation loop would append."""


import numpy as np
import streamlit as st

from gptviz import predictions, tokenizer, ui
from gptviz.charts import predictions as prediction_charts

K_MIN, K_MAX, K_DEFAULT = 1, 50, 5
T_MIN, T_MAX, T_DEFAULT = 0.05, 5.0, 1.0
SMALL_MULTIPLES = 8  # up to this many positions each gets its own top-k panel; beyond, pick one

inputs = ui.setup("Predictions")

st.title("Predictions: from logits to the next token")
trained = inputs.model_choice == "pretrained"
st.markdown(
    f"The last layer, `out_head`, maps each position's {inputs.cfg['emb_dim']}-number vector (`emb_dim`) to "
    f"**{inputs.cfg['vocab_size']:,} logits**, one score per token of the vocabulary. The row at position *t* "
    "scores every candidate for the token at *t + 1*: after *Every effort moves* it rates what may come next. "
    "`softmax` turns a row of logits into probabilities that add up to 1. Generation only uses the **last** "
    "position's row: it appends the most likely token and runs the model again."
)
ui.seed_code(
    "logits = model(batch)  # out_head: (batch, n_tokens, emb_dim) -> (batch, n_tokens, vocab_size)\n"
    "probas = torch.softmax(logits[:, -1, :], dim=-1)  # last position only: what generation uses\n"
    "idx_next = torch.argmax(probas, dim=-1, keepdim=True)  # (batch, 1): the greedy next token",
    "The seed's forward pass ends in out_head; chapter 4's generate_text_simple then does:",
)
ui.show_notes(inputs)
ui.require_model(inputs)
ui.require_tokens(inputs)
# The forward pass runs in the background while the controls are drawn.
pending_trace = ui.start_trace(inputs, keep=("logits",))


GREEDY_NOTE = "τ = 0 is greedy decoding (always the argmax, probabilities 1 and 0), which the slider only approaches"


def controls():
    ui.snap_url_value("k", K_MIN, K_MAX, K_DEFAULT)
    greedy_link = st.query_params.get("temperature", "").strip() in ("0", "0.0", "0.00")
    ui.snap_url_value("temperature", T_MIN, T_MAX, T_DEFAULT, why=GREEDY_NOTE if greedy_link else None)
    left, middle, right = st.columns([2, 2, 1.3], gap="large")
    k = left.slider(
        "k: candidates shown per position", K_MIN, K_MAX, K_DEFAULT, key="k", bind="query-params",
        help="The k tokens with the largest logits (torch.topk). Temperature never changes which they are.",
    )
    temperature = middle.slider(
        "temperature τ (softmax of logits / τ)", T_MIN, T_MAX, T_DEFAULT, step=0.05, key="temperature",
        bind="query-params",
        help="τ < 1 sharpens the distribution (the top token takes more), τ > 1 flattens it (towards uniform). "
        "τ → 0 is the argmax, greedy decoding; the slider stops at 0.05.",
    )
    full_vocab = right.toggle(
        "Whole vocabulary", key="full_vocab", bind="query-params",
        help="Add a heatmap of every vocabulary column, squeezed into buckets (the largest logit of each).",
    )
    return k, temperature, full_vocab


k, temperature, full_vocab = controls()
row = 0
if inputs.batch_size > 1:
    # Plain options: a bound radio keeps the option's label in the URL, so pred_row=1, not the text.
    row = st.radio(
        "Batch row", list(range(inputs.batch_size)), key="pred_row", bind="query-params", horizontal=True,
        captions=[f"“{text}”" for text in inputs.texts],
    )

logits = pending_trace.result()["logits"]  # (B, T, vocab_size), read-only float32
B, T, V = logits.shape
token_ids = np.asarray(inputs.token_ids[row])
row_logits = logits[row]  # (T, vocab_size): reduced below before anything is drawn
normalizer = predictions.log_normalizer(row_logits, temperature)  # (T,)
top = predictions.top_k(row_logits, k, temperature, normalizer)  # each (T, k)
after = predictions.continuations(row_logits, token_ids, temperature, normalizer)  # each (T,)

# --- the greedy next token ---------------------------------------------------------------

st.subheader("The next token: argmax at the last position")
idx_next = predictions.greedy_next_token(logits)  # (B, 1)
last_probs = predictions.probabilities_of(logits[:, -1, :], idx_next, 1.0)[:, 0]  # the course's softmax, τ = 1
st.code(f"idx_next = tensor({idx_next.tolist()})  # shape ({B}, 1)", language="python")
for b in range(B):
    shown = inputs.texts[b] if len(inputs.texts[b]) <= 80 else "…" + inputs.texts[b][-80:]
    st.markdown(
        f"**{tokenizer.bidi_isolated(shown)}** → **`{prediction_charts.vocab_label(int(idx_next[b, 0]))}`** (id {int(idx_next[b, 0])}, "
        f"probability {prediction_charts.format_prob(float(last_probs[b]))} out of {V:,} candidates)"
    )
if trained:
    st.caption("These weights are trained: the predictions are the model's real guesses at what comes next.")
else:
    st.caption(
        "With random weights (nothing is trained until chapter 5) these predictions are random: every token "
        f"gets about 1/{V:,} = {1 / V:.6f} of the probability, and the argmax is whichever random logit came out "
        "largest. The same holds for *GPTModel*: its blocks are real, its weights are not trained."
    )

# --- top-k at each position ------------------------------------------------------------------

st.subheader(f"Top-{k} next tokens at each position")
if T <= SMALL_MULTIPLES:
    positions = np.arange(T)
else:
    ui.snap_url_value("position", 0, T - 1, T - 1)
    position = st.slider(
        "Position t (its logits predict token t+1)", 0, T - 1, T - 1, key="position", bind="query-params",
        help="The last position is what generation uses; the others score tokens the text already has.",
    )
    positions = np.array([position])
fig = prediction_charts.top_k_bars(
    positions,
    top.ids[positions],
    top.logits[positions],
    top.probs[positions],
    token_ids,
    after.ranks[positions],
    after.probs[positions],
    after.logits[positions],
    temperature,
    V,
)
ui.plot(fig, key="top_k_bars")
st.caption(
    f"Bars: softmax(logits / τ) at τ = {temperature:g}, for the {k} largest logits. Orange marks the token "
    "the text really continues with; when it is not in the top-k it gets its own bar at the bottom, with its "
    "rank. τ < 1 sharpens the distribution (tall bars grow), τ > 1 flattens it towards uniform; the order "
    "never changes, so neither do the top-k or the argmax."
)
if T > 1:
    st.caption(
        f"Over the whole text, the real next token's median rank is {int(np.median(after.ranks[:-1])):,} of "
        f"{V:,} (a random guess: about {V // 2:,}), its mean probability "
        f"{prediction_charts.format_prob(float(after.probs[:-1].mean()))}."
    )

# --- the logits themselves ---------------------------------------------------------------------

st.subheader("The logits, position by position")
columns = predictions.readable_columns(top)
column_ids = np.broadcast_to(columns, (T, len(columns)))
ui.plot(
    prediction_charts.logits_heatmap(
        row_logits[:, columns],
        predictions.probabilities_of(row_logits, column_ids, temperature, normalizer),
        columns,
        token_ids,
        temperature,
        V,
    ),
    key="logits_heatmap",
)
st.caption(
    f"{len(columns)} of the {V:,} columns: the tokens in some position's top-{k}, most likely first when "
    "there are more than fit. Red is a high logit, blue a low one; hover for the probability. Temperature "
    "divides every logit by the same τ, so colours keep their order."
)
if full_vocab:
    buckets = predictions.vocab_buckets(row_logits)
    ui.plot(
        prediction_charts.full_vocab_heatmap(buckets.maxima, buckets.starts, buckets.width, token_ids, V),
        key="full_vocab_heatmap",
    )
    st.caption(
        "Each cell is the largest logit in a run of consecutive token ids, so a strongly predicted token shows "
        "as a bright peak." + ("" if trained else " Untrained, every row looks like noise.")
    )

# --- as the seed prints them ------------------------------------------------------------------

st.subheader("The logits as the seed prints them")
st.code(predictions.format_logits(logits), language="text")
st.caption(
    "`print(\"Output shape:\", logits.shape)` then `print(logits)`, formatted as torch does: the first and last "
    f"3 of the {V:,} columns of each row. With the default settings (the sidebar's *Dropout active* on, since "
    "the seed never calls `model.eval()`) these are the seed's numbers but one: its 1.6754 is 1.67545... here "
    "and prints as 1.6755. That value sits on a rounding edge, and a float32 sum can differ in its last bit "
    "between machines. The `grad_fn` line is what the course's model, which tracks gradients, adds; ours "
    "computes the same values without them."
)
