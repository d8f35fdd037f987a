"""Tokens: how GPT-2's byte-pair encoding cuts the text into pieces, and the batch of ids it makes."""

import streamlit as st

from gptviz import ui
from gptviz.charts import tokens as token_charts
from gptviz.config import DEFAULT_PRESET, PRESETS
from gptviz.tokenizer import VOCAB_SIZE, encode, token_label

inputs = ui.setup("Tokens")

st.title("Tokens: from text to ids")
st.markdown(
    f"Before the model sees anything, the text becomes a list of integers. GPT-2 uses **byte-pair "
    f"encoding (BPE)** with a vocabulary of **{VOCAB_SIZE:,} tokens**: 256 single bytes, 50,000 pieces "
    "learned by repeatedly merging the most frequent pair, and `<|endoftext|>` (50256). A space belongs to "
    "the word after it (`␣effort` is one token), common words are a single token, and rare words, "
    "numbers and emoji are split into several pieces. Each batch row below is one text, and every chip "
    "is a token with its id underneath."
)
printed = token_charts.torch_repr(inputs.token_ids)
# Side by side while torch's lines are short (the seed's batch); long batches get the full width.
narrow = max(len(line) for line in printed.splitlines()) <= 48
code, output = st.columns([3, 2]) if narrow else (st.container(), st.container())
with code:
    ui.seed_code(
        'tokenizer = tiktoken.get_encoding("gpt2")\n'
        "batch = []\n"
        "batch.append(torch.tensor(tokenizer.encode(txt1)))\n"
        "batch.append(torch.tensor(tokenizer.encode(txt2)))\n"
        "batch = torch.stack(batch, dim=0)\n"
        "print(batch)",
        "The seed's code that makes the batch (txt1 and txt2 are the sidebar's two texts):",
    )
config_status = st.container()  # the config's problems are shown here, but tokens need no model
ui.show_notes(inputs)
ui.require_tokens(inputs)

# With an invalid config the texts were cut at the default preset's context length.
context_length = inputs.cfg["context_length"] if inputs.spec else PRESETS[DEFAULT_PRESET]["context_length"]
sources = (inputs.text, inputs.text2)[: inputs.batch_size]  # row 0 is always text, row 1 text2
rows = [token_charts.row_groups(text, len(ids)) for text, ids in zip(sources, inputs.token_ids)]
B, T = inputs.batch_size, inputs.n_tokens

with output:
    st.caption("What `print(batch)` prints for your texts:")
    st.code(printed, language=None, height=320 if printed.count("\n") > 12 else "content")
    st.caption(
        f"`batch.shape` is `torch.Size([{B}, {T}])`: {B} row{'s' if B > 1 else ''} of {T} token ids, "
        "the `in_idx` every later page feeds to the model."
        + (" torch prints only 3 ids at each edge of a tensor of more than 1000 numbers." if B * T > 1000 else "")
    )

# --- chips ----------------------------------------------------------------------------------
st.subheader("The tokens of each batch row")
st.caption(
    "␣ is a space and ↵ a newline: both are part of a token. Hover a chip for its character span and "
    "raw pieces. A dashed chip is one character whose UTF-8 bytes BPE split into several tokens; the "
    "dark chip is the special token `<|endoftext|>`."
)
for r, groups in enumerate(rows):
    st.markdown(f"**Row {r}** · {len(inputs.token_ids[r])} tokens")
    # Long texts scroll inside a box, so the rest of the page stays in reach.
    long = len(groups) > 150
    with st.container(height=360 if long else "content", border=long):
        st.html(token_charts.chips_html([groups]))
    if note := token_charts.split_note(groups):
        st.caption(note)
if T > token_charts.MAX_SHOWN_TOKENS:
    st.caption(f"Chips and table show the first {token_charts.MAX_SHOWN_TOKENS:,} of {T:,} tokens of each row.")

# --- how many tokens ----------------------------------------------------------------------
n_typed = len(encode(inputs.text))
cols = st.columns(4)
cols[0].metric("tokens in row 0", T, help="After cutting to the context length, if needed.")
cols[1].metric("characters", len(inputs.texts[0]))
cols[2].metric("characters per token", f"{token_charts.chars_per_token(inputs.texts[0], T):.2f}",
               help="English prose averages about 4 characters per GPT-2 token.")
cols[3].metric("batch shape", f"{B} x {T}", help="(batch size, tokens): rows must have equal length to stack.")
st.progress(
    min(1.0, n_typed / context_length),
    text=f"Text 1 has {n_typed:,} tokens; the model sees at most context_length = {context_length:,}"
    + ("" if inputs.spec else " (the default preset's: the config in the sidebar is invalid)"),
)

st.subheader("Why these pieces?")
st.markdown(
    "- BPE starts from the 256 bytes, so **any** text can be encoded, even emoji or code.\n"
    "- Frequent pieces were merged first and got low ids: `the` is 1169, `␣the` is 262.\n"
    "- A word it saw rarely is built from smaller pieces, each a token of its own.\n"
    "- The model never sees letters, only these ids; each one picks a row of `tok_emb` (next page)."
)

st.subheader("Every token")
st.dataframe(token_charts.token_table(rows), hide_index=True)
labels = [[token_label(i) for i in ids] for ids in inputs.token_ids]
ui.plot(token_charts.token_id_bars(inputs.token_ids, labels))
ui.page_link("pages/2_Embeddings.py", "Next: each id becomes a vector (Embeddings)", ":material/grid_on:")

with config_status:
    ui.require_model(inputs)  # shows the config's problems above the tokens, after drawing them
