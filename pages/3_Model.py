"""Model: the architecture, its parameters, what the placeholders do, and the residual stream."""

import streamlit as st

from gptviz import architecture, stats, ui
from gptviz.build import SKELETON
from gptviz.charts import model as model_charts
from gptviz.config import total_parameters
from gptviz.flow import stages

# Above this many bytes of kept activations, only each block's input and output are traced:
# a trace is cached, and 1024 tokens x 48 blocks x 5 points of gpt2-xl would take gigabytes.
# (A block's input is the previous block's output, the same array, so it costs nothing extra.)
MAX_TRACE_BYTES = 128 * 2**20
# How each component's expander is labelled, by architecture.component_status.
STATUS_LABELS = {"real": "your model runs the real one", "placeholder": "your model runs a placeholder",
                 "absent": "not in your model"}
STATUS_ICONS = {"real": ":material/check_circle:", "placeholder": ":material/pending:",
                "absent": ":material/block:"}

inputs = ui.setup("Model")

st.title("Model: the architecture your text goes through")
st.markdown(
    "The seed builds the whole GPT before it has any real transformer block: `DummyGPTModel` has the "
    "token and position embeddings, dropout, `n_layers` blocks, a final norm and the output head, but "
    "each block is a `DummyTransformerBlock` and the final norm a `DummyLayerNorm`, and both **return "
    "their input unchanged**. This page lists every module with the shape of your data after it, counts "
    "the parameters, puts each placeholder beside the real component that replaces it, and measures "
    "the residual stream `x` as it passes through the blocks."
)
ui.seed_code(
    "# DummyGPTModel.__init__\n"
    'self.trf_blocks = nn.Sequential(*[DummyTransformerBlock(cfg) for _ in range(cfg["n_layers"])])\n'
    'self.final_norm = DummyLayerNorm(cfg["emb_dim"])\n'
    "# DummyGPTModel.forward\n"
    "x = self.trf_blocks(x)\n"
    "x = self.final_norm(x)",
    "The seed's lines this page is about:",
)
ui.show_notes(inputs)
ui.require_model(inputs)
ui.require_tokens(inputs)

spec, cfg = inputs.spec, inputs.cfg
B, T, n_layers = inputs.batch_size, inputs.n_tokens, cfg["n_layers"]
skeleton = spec.kind == SKELETON
real_norm = not skeleton and "layer_norm" in spec.parts
points = stats.BLOCK_POINTS
trace_bytes = 4 * B * T * cfg["emb_dim"] * (n_layers * (len(points) - 1) + 1)
if trace_bytes > MAX_TRACE_BYTES:
    points = ("input", "output")
# The forward pass runs in the background while the architecture, the parameters and the code,
# which do not depend on the text, are drawn; the residual stream below waits for it.
pending_trace = ui.start_trace(inputs, keep=stats.keep_patterns(points))
st.caption(f"Model: **{spec.label}**, {n_layers} blocks, emb_dim {cfg['emb_dim']}, batch {B} x {T} tokens.")

# --- architecture --------------------------------------------------------------------------
st.subheader("The path and the shape after every stage")
st.dataframe(
    [{"stage": s.name, "code (forward pass)": s.code, "shape": s.shape_text}
     for s in stages(cfg, B, T, spec.kind, spec.parts)],
    hide_index=True, width="stretch",
)

st.subheader("Every module, named as in the code")
expand_all = st.toggle(
    f"List the submodules of all {n_layers} blocks", key="all_blocks", bind="query-params",
    help="Off: trf_blocks.0 with its submodules, the other blocks one line each (they are built alike).",
)
built = ui.get_model(spec)  # the cached model: only read here, never changed
modules = architecture.module_table(built.model, cfg, B, T, expand_all=expand_all)
st.dataframe(
    modules, hide_index=True, width="stretch", height=min(700, 38 + 35 * len(modules)),
    column_config={"parameters": st.column_config.NumberColumn(format="localized")},
)
collapsed = "" if expand_all or n_layers == 1 else (
    "`trf_blocks.1` has" if n_layers == 2 else f"`trf_blocks.1` ... `trf_blocks.{n_layers - 1}` have")
st.caption(
    "Parameters count the module with its children. Output shapes are (batch, tokens, ...) for your "
    "input; `pos_emb` has no batch axis and is broadcast when added. Inside attention, the "
    "(B, T, emb_dim) queries, keys and values are viewed as (B, n_heads, T, head_dim); "
    "`att.dropout` acts on the (B, n_heads, T, T) attention weights."
    + (f" {collapsed} the same submodules as `trf_blocks.0`." if collapsed else "")
)

# --- parameters ----------------------------------------------------------------------------
st.subheader("Parameters and memory")
parts, placeholder_blocks = spec.parts, skeleton
table = model_charts.parameter_table(cfg, parts, placeholder_blocks)
total = int(table["params"].sum())
tied = total_parameters(cfg, parts, placeholder_blocks, tied=True)
counted = int(modules["parameters"].iloc[0])  # model.parameters() counts a shared matrix once
tied_here = architecture.ties_out_head(built.model)
cols = st.columns(4)
cols[0].metric("parameters in this model", f"{counted:,}", help="sum(p.numel() for p in model.parameters())")
cols[1].metric("without weight tying", f"{total:,}",
               help="tok_emb and out_head as two matrices, as the course builds GPTModel.")
cols[2].metric("with weight tying", f"{tied:,}", help="out_head reuses tok_emb's matrix, as GPT-2 does.")
cols[3].metric("memory (fp32)", f"{counted * 4 / model_charts.MB:,.2f} MB", help="4 bytes per parameter of this model.")
left, right = st.columns([1, 1])
with left:
    st.dataframe(
        table[["component", "params", "MB", "share"]], hide_index=True, width="stretch",
        column_config={
            "params": st.column_config.NumberColumn("parameters", format="localized"),
            "MB": st.column_config.NumberColumn("MB (fp32)", format="%.2f"),
            "share": st.column_config.NumberColumn("share", format="percent"),
        },
    )
with right:
    ui.plot(model_charts.parameters_figure(table))
full = total_parameters(cfg)
st.markdown(
    f"`tok_emb` and `out_head` are both vocab_size x emb_dim = {cfg['vocab_size']:,} x {cfg['emb_dim']:,}: "
    f"together {2 * cfg['vocab_size'] * cfg['emb_dim'] / total:.0%} of this model. GPT-2 **ties** them "
    "(the output head reuses the embedding matrix), which is why the 163M-parameter GPTModel of "
    "GPT_CONFIG_124M is called 124M: "
    f"{full:,} − {cfg['vocab_size'] * cfg['emb_dim']:,} = {total_parameters(cfg, tied=True):,} for this config."
    + (f" The skeleton has no block parameters at all; the real GPTModel of this config would have "
       f"{full:,}." if skeleton else "")
    + (" **This model is tied**: `out_head.weight` *is* `tok_emb.weight`, one matrix serving both, so it "
       f"holds {counted:,} parameters (the table and chart count the shared matrix in both rows)."
       if tied_here else "")
)

# --- placeholders beside the real components -------------------------------------------------
st.subheader("Placeholders and the real components")
st.markdown(
    "Open a component to see what stands in for it (left) beside the course's real code (right); its "
    "label says which one your model runs. Inside a real block, attention or feed-forward left "
    "out by a *mix* is a `PlaceholderSublayer` that adds zeros, so the shortcut carries x through."
)
# Expanders, not st.tabs: a tab panel re-scans its whole subtree for a focusable element on
# every DOM change, and code blocks have none, which cost ~200 ms of browser time per rerun.
for component, placeholder in architecture.COMPONENTS.items():
    status = architecture.component_status(component, spec.kind, spec.parts)
    with st.expander(f"`{component}`: {STATUS_LABELS[status]}", icon=STATUS_ICONS[status]):
        st.caption(
            {"real": f"Your model runs the real `{component}`.",
             "placeholder": f"Your model runs the placeholder `{placeholder}` instead of `{component}`.",
             "absent": f"Your model has no `{component}`: "
             + ("the skeleton's blocks are placeholders, so nothing inside a block exists."
                if skeleton else "it is part of FeedForward, which your mix leaves out.")}[status]
        )
        code_left, code_right = st.columns([2, 3])
        with code_left:
            st.markdown(f"**Placeholder: `{placeholder}`**" if placeholder else "**No placeholder**")
            if placeholder:
                st.code(architecture.source(placeholder), language="python", wrap_lines=True)
            else:
                st.caption("GELU is the non-linearity inside FeedForward; it is there exactly when FeedForward is.")
        with code_right:
            st.markdown(f"**Real: `{component}`**")
            st.code(architecture.source(component), language="python", wrap_lines=True)

# --- the residual stream (traced in the background since the top of the page) ---------------
tr = pending_trace.result()
changes = stats.block_changes(tr, n_layers)
st.subheader("What each block does to your text")
unchanged = int(changes["unchanged"].sum())
if unchanged == n_layers:
    st.success(
        f"For your text, `trf_blocks.i.output` equals `trf_blocks.i.input` exactly, value for value, in "
        f"all {n_layers} blocks: each block returns its input, so `x = self.trf_blocks(x)` leaves x as "
        "the embeddings made it.",
        icon=":material/check_circle:",
    )
else:
    st.markdown(
        f"{n_layers - unchanged} of {n_layers} blocks change the stream: each adds what its attention and "
        "feed-forward compute to x (the shortcut connections; a placeholder sublayer adds zeros). The bars "
        "show by how much."
    )
final_same = bool((tr["final_norm"] == tr[f"trf_blocks.{n_layers - 1}.output"]).all())
st.caption(
    "`final_norm` returns its input too: its output equals the last block's output."
    if final_same else
    "`final_norm` is a real LayerNorm: its output differs from the last block's output (see the chart below)."
)
change_columns = {
    "unchanged": st.column_config.CheckboxColumn("output == input"),
    "max_abs_change": st.column_config.NumberColumn("max |change|", format="%.4g"),
    "change_rms": st.column_config.NumberColumn("rms of change", format="%.4g"),
    "relative_change": st.column_config.NumberColumn(
        "relative", format="%.4f", help="||output − input|| / ||input||"),
}
if unchanged == n_layers:  # a chart of zeros says nothing the table does not
    st.dataframe(changes, hide_index=True, column_config=change_columns)
else:
    change_left, change_right = st.columns([1, 1])
    with change_left:
        ui.plot(model_charts.block_change_figure(changes))
    with change_right:
        st.dataframe(changes, hide_index=True, width="stretch", column_config=change_columns)

st.subheader("The residual stream, block by block")
stat = st.radio(  # no format_func: Streamlit would put the shown label in the URL
    "Statistic", list(model_charts.STAT_LABELS), captions=list(model_charts.STAT_HINTS.values()),
    horizontal=True, key="stat", bind="query-params",
)
stream = stats.activation_stats(tr, stats.residual_names(n_layers, points))
ui.plot(model_charts.stats_figure(stream, stat))
first, last = stream.iloc[0], stream[stream["point"] == "output"].iloc[-1]
if skeleton or unchanged == n_layers:
    st.markdown(
        f"Every line is flat: with placeholder blocks the residual stream passes through untouched, RMS "
        f"{first['rms']:.4f} from the first block to the last. The values are the embeddings after dropout."
    )
else:
    normed = stream[stream["point"].isin(["norm1", "norm2", "final_norm"])]
    unit = bool(((normed["token_std_mean"] - 1).abs() < 1e-2).all() and (normed["token_mean_absmax"] < 1e-3).all())
    if not real_norm:
        norm_note = " The norms here are placeholders, so `norm1` and `norm2` are x itself."
    elif unit:
        norm_note = (
            " The normed copies (`norm1`, `norm2`, `final_norm`) stay at mean 0 and std 1 per token: LayerNorm "
            "rescales every token to mean 0 and standard deviation 1 (its scale and shift start at 1 and 0), so "
            "attention and feed-forward always see inputs of the same size however large x becomes."
        )
    else:
        norm_note = (
            " LayerNorm rescales every token to mean 0 and std 1, then applies its learned `scale` and "
            "`shift`: the normed copies (`norm1`, `norm2`, `final_norm`) have the size training chose, "
            "whatever the size of x."
        )
    st.markdown(
        f"The stream {'grows' if last['rms'] > first['rms'] else 'changes'}: its RMS goes from "
        f"{first['rms']:.4f} entering `trf_blocks.0` to {last['rms']:.4f} leaving `trf_blocks.{n_layers - 1}`, "
        "because each block *adds* its attention and feed-forward outputs to x (`x = x + shortcut`) and "
        "nothing in the stream scales it back." + norm_note
    )
if points != stats.BLOCK_POINTS:
    st.caption(
        "This input is long: to keep memory low only each block's input and output are traced, "
        "not norm1, resid_mid and norm2."
    )
st.dataframe(
    stream.drop(columns=["layer"]), hide_index=True, width="stretch", height=min(600, 38 + 35 * len(stream)),
    column_config={
        **{c: st.column_config.NumberColumn(format="%.4f") for c in stats.STAT_COLUMNS},
        "token_mean_absmax": st.column_config.NumberColumn(
            "max |token mean|", format="%.2e", help="Largest mean of one token's emb_dim values."),
        "token_std_mean": st.column_config.NumberColumn(
            "mean token std", format="%.4f", help="Standard deviation over emb_dim, per token, averaged."),
    },
)
st.caption(
    "Statistics over all B x T x emb_dim values of each trace name (std with ddof=0, as LayerNorm "
    "computes it). Per token: max |token mean| and mean token std are over each token's emb_dim values: "
    "0 and 1 for a real LayerNorm's output."
)
