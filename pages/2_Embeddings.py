"""Embeddings: each token id picks a row of tok_emb, each position a row of pos_emb; the model adds them."""

import streamlit as st

from gptviz import ui
from gptviz.charts import embeddings as emb_charts
from gptviz.charts.common import position_labels

inputs = ui.setup("Embeddings")

st.title("Embeddings: token + position vectors")
st.markdown(
    "The model's first layer is a lookup table. `tok_emb` has one row of `emb_dim` numbers per token of "
    "the vocabulary: each id in the batch picks its row. Attention alone cannot tell positions apart, so "
    "`pos_emb` has one row per position (up to `context_length`), and the model **adds** the position's "
    "row to the token's. Dropout then zeroes a random fraction `drop_rate` of the sum while training. "
    "Below are the real numbers for your text."
)
ui.seed_code(
    "tok_embeds = self.tok_emb(in_idx)\n"
    "pos_embeds = self.pos_emb(torch.arange(seq_len, device=in_idx.device))\n"
    "x = tok_embeds + pos_embeds\n"
    "x = self.drop_emb(x)",
    "The first lines of the seed's forward pass (DummyGPTModel and GPTModel share them):",
)
ui.show_notes(inputs)
ui.require_model(inputs)
ui.require_tokens(inputs)

tr = ui.get_trace(inputs, keep=("tok_emb", "pos_emb", "embeddings", "drop_emb"))
B, T = inputs.batch_size, inputs.n_tokens
D, p = inputs.cfg["emb_dim"], inputs.cfg["drop_rate"]
dropout_on = inputs.dropout and p > 0


def _row_choice() -> int:
    if B == 1:
        return 0
    choice = st.segmented_control(
        "Batch row", list(range(B)), default=0, format_func=lambda r: f"row {r}", key="emb_row",
        bind="query-params", required=True, help=" / ".join(f"row {r}: {t}" for r, t in enumerate(inputs.texts)),
    )
    return 0 if choice is None else int(choice)


def _position_choice(n: int) -> int:
    """The position to inspect, kept in 0..n-1 whatever a link or a shorter text says."""
    key = "emb_token"
    raw = st.session_state.get(key, st.query_params.get(key, 0))
    try:
        value = int(float(raw))
    except (TypeError, ValueError, OverflowError):  # "abc", "nan", "inf"
        value = 0
    clamped = float(min(max(value, 0), n - 1))
    if st.session_state.get(key) != clamped:
        # The widget would drop an out-of-range value for its default; keep the nearest instead.
        st.session_state[key] = clamped
    # A float widget shown as a whole number ("%.0f": "%d" on a float logs a warning each run):
    # streamlit 1.67's int number_input raises on "?emb_token=inf" while seeding from the URL.
    return int(st.number_input(
        f"Position (0 .. {n - 1})", min_value=0.0, max_value=float(n - 1), step=1.0, format="%.0f",
        key=key, bind="query-params",
    ))


row = _row_choice()
labels = position_labels(inputs.token_ids[row])
tok, pos, emb, drop = (tr[name] for name in ("tok_emb", "pos_emb", "embeddings", "drop_emb"))

# --- the three matrices ---------------------------------------------------------------------
st.subheader(f"Row {row}: {T} tokens, each a vector of {D} numbers")
ui.plot(emb_charts.embedding_panels(tok[row], pos, emb[row], labels))
st.dataframe(emb_charts.scale_table({"tok_emb": tok, "pos_emb": pos, "tok_emb + pos_emb": emb}), hide_index=True)
st.caption(
    "`nn.Embedding` starts every weight at random from N(0, 1): mean 0, standard deviation 1. The sum of "
    "two independent N(0, 1) numbers has standard deviation √2 ≈ 1.41. Training moves these weights; "
    "here they are as `torch.manual_seed` left them."
)


# --- more views of the same numbers: only the open tab is computed ------------------------------


def show_dropout() -> None:
    """drop_emb: which entries dropout zeroed and how the survivors were scaled."""
    st.markdown("`x = self.drop_emb(x)`: dropout on the summed embeddings.")
    if dropout_on:
        stats = emb_charts.dropout_stats(emb, drop, p)
        cols = st.columns(3)
        cols[0].metric("entries zeroed", f"{stats['zeroed']:,} of {stats['total']:,}",
                       help="Over the whole batch: B x T x emb_dim entries.")
        cols[1].metric("expected p x N", f"{stats['expected']:,.1f} ± {stats['expected_std']:.1f}",
                       help="Each entry is dropped independently with probability p; ± one standard deviation.")
        cols[2].metric("survivors scaled by", f"{stats['survivor_scale']:.4f}", help=f"1/(1-p) = {stats['scale']:.4f}")
        ui.plot(emb_charts.dropout_mask_heatmap(emb_charts.dropout_ratio(emb[row], drop[row]), labels, p))
        st.caption(
            f"Each entry is zeroed with probability p = {p:g}; the rest are multiplied by 1/(1-p) so the expected "
            "value stays the same. The seed never calls `model.eval()`, so its dropout is active; switch "
            "*Dropout active* off in the sidebar to see `drop_emb` equal the sum."
        )
    else:
        why = f"drop_rate is {p:g}" if p == 0 else "dropout is switched off in the sidebar (as after `model.eval()`)"
        st.info(f"No dropout here: {why}, so `drop_emb` equals `tok_emb + pos_emb` exactly.", icon=":material/info:")


def show_one_token() -> None:
    """One position's tok_emb, pos_emb and their sum, value by value."""
    pick, what = st.columns([1, 3], vertical_alignment="bottom")
    with pick:
        position = _position_choice(T)
    token_id = inputs.token_ids[row][position]
    what.markdown(f"Position **{labels[position]}**, token id **{token_id}**: row {token_id} of `tok_emb` plus "
                  f"row {position} of `pos_emb`.")
    vectors = {"tok_emb": tok[row, position], "pos_emb": pos[position], "tok_emb + pos_emb": emb[row, position]}
    if dropout_on:
        vectors["drop_emb"] = drop[row, position]
    table = emb_charts.vector_table(vectors)
    st.dataframe(table, column_config={"_index": "vector", **{c: st.column_config.NumberColumn(format="%.4f") for c in table}})
    ui.plot(emb_charts.vector_lines(tok[row, position], pos[position], emb[row, position], labels[position]))


def show_pca() -> None:
    """Every token's vector projected onto its two principal components."""
    st.markdown(
        f"Each token is a point in {D} dimensions. PCA finds the two directions along which these points "
        "spread the most and projects onto them. With **random, untrained** weights the layout is random: "
        "nearby points mean nothing, and the same token in two places lands on the same spot in `tok_emb`. "
        "After training, tokens used alike (*cat*, *dog*) sit close together. Adding `pos_emb` moves each "
        "point by its position's vector."
    )
    point_labels = [f"r{r}·{label}" for r in range(B) for label in position_labels(inputs.token_ids[r])]
    point_rows = [f"row {r}" for r in range(B) for _ in range(T)]
    left, right = st.columns(2)
    for column, name, values in ((left, "tok_emb", tok), (right, "tok_emb + pos_emb", emb)):
        points, names, groups = emb_charts.merge_duplicates(values.reshape(B * T, D), point_labels, point_rows)
        coords, explained = emb_charts.pca_2d(points)
        with column:
            ui.plot(emb_charts.pca_scatter(coords, names, explained, f"PCA of {name}: {len(points)} distinct vectors", groups))
    st.caption("Equal vectors are one point with their labels joined by =: a token repeated in the text has one "
               "tok_emb row, and the same token at the same position in both rows has one sum. A tight cluster in "
               "the sum is usually one frequent token (a space, a newline) at many positions.")


dropout_tab, token_tab, pca_tab = ui.lazy_tabs(["Dropout", "One token", "In 2-D (PCA)"], key="emb_view")

with dropout_tab:
    if dropout_tab.open:
        show_dropout()
with token_tab:
    if token_tab.open:
        show_one_token()
with pca_tab:
    if pca_tab.open:
        show_pca()

back, forward = st.columns(2)
with back:
    ui.page_link("pages/1_Tokens.py", "Back: where the ids come from (Tokens)", ":material/text_fields:")
with forward:
    ui.page_link("pages/3_Model.py", "Next: through the transformer blocks (Model)", ":material/account_tree:")
