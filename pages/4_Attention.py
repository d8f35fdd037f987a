"""Attention: one head's scores, the causal mask, the scaled and masked scores and the softmax weights."""

import math

import streamlit as st

from gptviz import ui
from gptviz.build import PRETRAINED
from gptviz.charts import attention as att_charts
from gptviz.charts.common import position_labels

inputs = ui.setup("Attention")

st.title("Attention: which earlier tokens each token looks at")
st.markdown(
    "Inside every real transformer block, `MultiHeadAttention` lets each token gather information from "
    "the tokens before it. Each head projects the normed residual stream into **queries**, **keys** and "
    "**values** of `head_dim = emb_dim / n_heads` numbers, scores every query against every key, hides the "
    "later tokens with the **causal mask**, scales by √head_dim and turns each row into **weights** with a "
    "softmax. Below, the four steps for one layer and head of your text, then every head of that layer."
)
ui.seed_code(
    "attn_scores = queries @ keys.transpose(2, 3)  # (B, n_heads, T, T)\n"
    "attn_scores.masked_fill_(mask_bool, -torch.inf)  # hide later tokens\n"
    "attn_weights = torch.softmax(attn_scores / keys.shape[-1]**0.5, dim=-1)\n"
    "context_vec = (attn_weights @ values).transpose(1, 2)  # (B, T, n_heads, head_dim)",
    "The course's MultiHeadAttention.forward: the lines drawn on this page.",
)
ui.show_notes(inputs)
ui.require_model(inputs)
ui.require_tokens(inputs)
ui.require_real_attention(inputs)

cfg = inputs.cfg
n_layers, n_heads = cfg["n_layers"], cfg["n_heads"]
head_dim = cfg["emb_dim"] // n_heads
B, T = inputs.batch_size, inputs.n_tokens


def nearest_index(raw, n: int, what: str):
    """The valid index 0..n-1 nearest to a URL or state value, and what was wrong with it, if anything."""
    if raw is None:
        return None, None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        return 0, f"`{what}={raw}` is not a number"
    index = min(max(int(round(value)), 0), n - 1)
    if index != value:
        return index, f"This model has {what}s 0 to {n - 1}, so there is no {what} {raw}"
    return index, None


def index_slider(column, label: str, key: str, n: int, what: str, help: str) -> int:
    """A URL-bound slider over 0..n-1; a value from an old link or another model is clamped first."""
    index, problem = nearest_index(st.session_state.get(key, st.query_params.get(key)), n, what)
    if problem:
        st.session_state[key] = index
    if n == 1:
        column.markdown(f"**{label}**: 0 (this model has one)")
        value = 0
    else:
        value = column.slider(label, 0, n - 1, key=key, bind="query-params", help=help)
    if problem:  # said after the widget decided, so the message names what is shown
        notices.warning(f"{problem}: showing {what} {value}.", icon=":material/tune:")
    return value


notices = st.container()
controls = st.columns([3, 3, 4])
layer = index_slider(controls[0], "Layer (transformer block)", "layer", n_layers, "layer",
                     f"trf_blocks.0 ... trf_blocks.{n_layers - 1}")
head = index_slider(controls[1], "Head", "head", n_heads, "head", f"Each of the {n_heads} heads has its own "
                    f"W_query, W_key, W_value columns ({head_dim} each).")
row = 0
if B == 2:
    row = controls[2].radio(
        "Batch row", [0, 1], captions=list(inputs.texts), horizontal=True, key="att_row", bind="query-params",
    ) or 0

# Only this layer's attention is traced, so a long text stays cheap.
prefix = f"trf_blocks.{layer}.att"
tr = ui.get_trace(inputs, keep=(f"{prefix}.scores", f"{prefix}.weights", f"{prefix}.context"))
scores = tr[f"{prefix}.scores"][row, head]  # (T, T)
weights = tr[f"{prefix}.weights"][row, head]  # (T, T)
labels = position_labels(inputs.token_ids[row])

st.caption(
    f"`{prefix}`: scores and weights have shape (B, n_heads, T, T) = ({B}, {n_heads}, {T}, {T}); "
    f"showing batch row {row}, head {head}. head_dim = {cfg['emb_dim']} / {n_heads} = {head_dim}."
)

# --- the four steps --------------------------------------------------------------------------
ui.plot(att_charts.steps_figure(scores, weights, labels, layer, head, head_dim))
step_left, step_right = st.columns(2)
step_left.markdown(
    "**1 · Scores.** `queries @ keys.transpose(2, 3)`: how well each query matches each key, for every pair, later tokens "
    "included: the mask comes next.\n\n"
    f"**3 · Scaled.** Dividing by √head_dim = {math.sqrt(head_dim):.3f} keeps the scores' spread near 1 whatever head_dim "
    "is, so the softmax does not saturate into one-hot rows."
)
step_right.markdown(
    "**2 · Mask.** `mask_bool` is True above the diagonal: a token may look at itself and earlier tokens, never at the "
    "ones after it, which it is learning to predict.\n\n"
    "**4 · Weights.** `torch.softmax(..., dim=-1)`: each row becomes positive weights summing to 1; exp(-inf) = 0 above "
    "the diagonal."
)
st.caption("Zooming into one panel zooms into all four: they share the query and key axes. Hover for values.")

checks = att_charts.weight_checks(weights, scores, head_dim)
st.success(
    f"Checked on these numbers: every row sums to 1 (largest error {checks['max_row_sum_error']:.1e}); "
    f"every weight above the diagonal is {checks['max_above_diagonal']:g}; and softmax(mask(scores) / "
    f"√{head_dim}) recomputed in numpy from the scores shown gives the model's weights to within "
    f"{checks['max_recompute_error']:.1e}.",
    icon=":material/check_circle:",
)

# --- more views of this layer: only the open tab is computed ------------------------------------
evenness, all_heads, passed_on = ui.lazy_tabs(["How even", "All heads", "Context vectors"], key="att_view")

with evenness:
    if evenness.open:
        st.markdown(f"**How even the weights of head {head} are**")
        ui.plot(att_charts.uniformity_figure(weights, labels, layer, head))
        ratio = att_charts.max_over_uniform(weights)
        if inputs.spec.kind == PRETRAINED:
            st.markdown(
                "This model has trained weights. Trained heads are usually far from uniform: many put most of "
                "their weight on a few tokens (often the first token, or the previous one). Compare with the "
                "dashed uniform line 1/(i + 1): here the largest weight in a row is up to "
                f"{ratio:.2f} times the uniform one."
            )
        else:
            st.markdown(
                "This model's weights are random (no training yet), so queries and keys carry no meaning and the "
                "scaled scores are small: the softmax spreads each query's attention almost **uniformly** over "
                "the tokens it can see, 1/(i + 1) for query i (dashed). Training is what makes heads pick out "
                f"particular tokens. Here the largest weight in any row is at most {ratio:.2f} times the uniform one."
            )

with all_heads:
    if all_heads.open:
        st.markdown(
            f"**All {n_heads} heads of layer {layer}.** Each head has its own query, key and value projections "
            "(its slice of `W_query`, `W_key`, `W_value`), so each head attends differently; their context "
            "vectors are concatenated and mixed by `out_proj`. One colour scale for all heads."
        )
        ui.plot(att_charts.heads_grid_figure(tr[f"{prefix}.weights"][row], labels, layer))

with passed_on:
    if passed_on.open:
        st.markdown(f"**What head {head} passes on: its context vectors**")
        context = tr[f"{prefix}.context"][row, :, head * head_dim:(head + 1) * head_dim]  # (T, head_dim)
        ui.plot(att_charts.context_figure(context, labels, layer, head))
        st.caption(
            f"Row i is the weighted average of the value vectors of tokens 0..i, with row i of the weights above "
            f"(after attention dropout when dropout is active). Columns {head * head_dim}..{(head + 1) * head_dim - 1} "
            f"of `{prefix}.context` (B, T, emb_dim): the heads sit side by side before `out_proj`."
        )
