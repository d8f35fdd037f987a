"""gptviz home: what the app is, the data flow with live shapes, and the way in to each stage."""

import streamlit as st

from gptviz import ui
from gptviz.flow import stages

inputs = ui.setup("Home")

st.title("gptviz: follow your text through a GPT")
st.markdown(
    "Type a sentence in the sidebar and watch it travel through the model of chapter 4 of "
    "*Build a Large Language Model (From Scratch)*: BPE tokens, token and position embeddings, "
    "the transformer blocks, the final norm, the output head and the logits that predict the next "
    "token. Every number is computed live by the course's own code. The defaults are the seed's "
    "example exactly: `torch.manual_seed(123)`, `DummyGPTModel(GPT_CONFIG_124M)` and the batch "
    "*Every effort moves you* / *Every day holds a*."
)
ui.show_notes(inputs)
ui.require_model(inputs)
ui.require_tokens(inputs)

B, T = inputs.batch_size, inputs.n_tokens
flow = stages(inputs.cfg, B, T, inputs.spec.kind, inputs.spec.parts)

st.subheader(f"The data flow for your input: batch of {B}, {T} tokens each")
diagram, table = st.columns([2, 3])
with diagram:
    dot = [
        "digraph G {",
        'node [shape=box, style="rounded,filled", fillcolor="#eef3fb", color="#4a6fa5", fontname=Helvetica, fontsize=11];',
        'edge [color="#4a6fa5"];',
    ]
    for i, stage in enumerate(flow):
        dot.append(f'n{i} [label="{stage.name}\\n{stage.shape_text}"];')
        if i:
            dot.append(f"n{i - 1} -> n{i};")
    dot.append("}")
    st.graphviz_chart("\n".join(dot), width="stretch")
with table:
    st.dataframe(
        [{"stage": s.name, "shape": s.shape_text, "code (forward pass)": s.code, "page": s.page} for s in flow],
        hide_index=True,
    )
    st.caption(
        "Shapes are (batch, tokens, ...). Position embeddings are (tokens, emb_dim) and are broadcast "
        "over the batch when added to the token embeddings."
    )

st.subheader("Each stage, one page")
cols = st.columns(3)
links = [
    ("pages/1_Tokens.py", "Tokens: BPE pieces and ids", ":material/text_fields:"),
    ("pages/2_Embeddings.py", "Embeddings: token + position vectors", ":material/grid_on:"),
    ("pages/3_Model.py", "Model: architecture, parameters, activations", ":material/account_tree:"),
    ("pages/4_Attention.py", "Attention: scores, mask, weights", ":material/visibility:"),
    ("pages/5_Predictions.py", "Predictions: logits and next tokens", ":material/insights:"),
]
for i, (page, label, icon) in enumerate(links):
    with cols[i % 3]:
        ui.page_link(page, label, icon)

st.subheader("How to use it")
st.markdown(
    "- **Sidebar**: your text (and an optional second text to make a batch, as the seed does), the "
    "model (the seed's skeleton, the real GPT, or a mix of real parts and placeholders), a config "
    "preset you can edit, the seed, and whether dropout is active.\n"
    "- **Links are views**: every control lives in the page's URL. Copy it to share exactly what you "
    "see, on any page.\n"
    "- **Placeholders**: the seed's `DummyTransformerBlock` and `DummyLayerNorm` return their input. "
    "Switch to *GPTModel* to see real attention and layer norms at work."
)
