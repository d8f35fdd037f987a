"""What building each page's plotly figures costs: every builder in gptviz/charts, then its JSON.

    .venv/bin/python benchmarks/bench_charts.py [--tokens 32,128] [--repeats 15] [--baseline FILE]

Every warm rerun rebuilds each page's figures, and Streamlit then serializes each one
(`st.plotly_chart` calls `plotly.io.to_json(fig, validate=False)`, which copies the figure
with `to_dict()`). This times both, per builder, on the inputs the pages give them:

    model    the 124M GPTModel (gpt2-small preset, seed 123) built as the app builds it,
             traced once with dropout on (the app's default), torch on one thread
    input    one batch row of real English, 32 and 128 tokens (B=1: the default second
             text has another length, so the app drops it, as in `bench_app.py warm`)
    pages    each builder is called as pages/*.py calls it, with the page's defaults:
             Attention layer 0 head 0, Predictions k=5 at temperature 1, Generate 10
             greedy steps, the Model page's "rms"

Each cell is the best of --repeats runs after one warm-up: build ms, to_json ms, their sum,
and the kB of JSON. Rows marked * are not drawn with the page's defaults (a toggle, a closed tab, or a
text of at most 8 tokens) and are left out of the page totals. No pass/fail: the budget is
the whole rerun's (<= 300 ms, `bench_app.py warm`); this says how much of it is figures.
With --baseline (an earlier run's JSON) each row also shows the earlier total and the ratio.
Results: artifacts/bench/charts.json (--name to change).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

from _report import ROOT, describe_machine, machine, write_result

sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import plotly.io as pio  # noqa: E402
import torch  # noqa: E402
from bench_trace import token_ids  # noqa: E402

from gptviz import predictions, stats, tokenizer  # noqa: E402
from gptviz.build import GPT, ModelSpec, build_model  # noqa: E402
from gptviz.charts import attention, common, embeddings, generate, model, tokens  # noqa: E402
from gptviz.charts import predictions as prediction_charts  # noqa: E402
from gptviz.config import GPT_CONFIG_124M, config_key  # noqa: E402
from gptviz.stepper import PrefixLogits, walk  # noqa: E402
from gptviz.trace import trace  # noqa: E402

PAGES = ("Tokens", "Embeddings", "Model", "Attention", "Predictions", "Generate")
K, TEMPERATURE, GEN_STEPS, SMALL_MULTIPLES = 5, 1.0, 10, 8  # the pages' defaults


def page_calls(built, ids: list[int]) -> list[tuple]:
    """(page, builder name, zero-argument call, in the page's default view) for every figure."""
    cfg = built.cfg
    T, D, p = len(ids), cfg["emb_dim"], cfg["drop_rate"]
    n_layers, n_heads = cfg["n_layers"], cfg["n_heads"]
    head_dim = D // n_heads
    tr = trace(built.model, [ids], dropout_generator=built.dropout_generator())
    labels = common.position_labels(ids)
    calls = []

    def add(page, name, fn, *args, default=True):
        calls.append((page, name, lambda: fn(*args), default))

    # Tokens
    add("Tokens", "tokens.token_id_bars", tokens.token_id_bars, [ids], [[tokenizer.token_label(i) for i in ids]])

    # Embeddings (row 0; position 0 for one token's vectors)
    tok, pos, emb, drop = (tr[n] for n in ("tok_emb", "pos_emb", "embeddings", "drop_emb"))
    add("Embeddings", "embeddings.embedding_panels", embeddings.embedding_panels, tok[0], pos, emb[0], labels)
    add("Embeddings", "embeddings.dropout_mask_heatmap", embeddings.dropout_mask_heatmap,
        embeddings.dropout_ratio(emb[0], drop[0]), labels, p)
    add("Embeddings", "embeddings.vector_lines", embeddings.vector_lines, tok[0, 0], pos[0], emb[0, 0], labels[0],
        default=False)  # the "One token" tab
    point_labels, point_rows = [f"r0·{label}" for label in labels], ["row 0"] * T
    for name, values in (("tok_emb", tok), ("tok_emb + pos_emb", emb)):
        points, names, groups = embeddings.merge_duplicates(values.reshape(T, D), point_labels, point_rows)
        coords, explained = embeddings.pca_2d(points)
        add("Embeddings", f"embeddings.pca_scatter {name}", embeddings.pca_scatter, coords, names, explained,
            f"PCA of {name}: {len(points)} distinct vectors", groups, default=False)  # the PCA tab

    # Model
    add("Model", "model.parameters_figure", model.parameters_figure, model.parameter_table(cfg))
    add("Model", "model.block_change_figure", model.block_change_figure, stats.block_changes(tr, n_layers))
    stream = stats.activation_stats(tr, stats.residual_names(n_layers))
    add("Model", "model.stats_figure", model.stats_figure, stream, "rms")

    # Attention (layer 0, head 0, row 0)
    scores, weights = tr["trf_blocks.0.att.scores"][0, 0], tr["trf_blocks.0.att.weights"][0, 0]
    add("Attention", "attention.scores_figure", attention.scores_figure, scores, labels, 0, 0)
    add("Attention", "attention.mask_figure", attention.mask_figure, labels)
    add("Attention", "attention.scaled_figure", attention.scaled_figure, scores, labels, 0, 0, head_dim)
    add("Attention", "attention.weights_figure", attention.weights_figure, weights, labels, 0, 0)
    add("Attention", "attention.uniformity_figure", attention.uniformity_figure, weights, labels, 0, 0)
    add("Attention", "attention.heads_grid_figure", attention.heads_grid_figure,  # the "All heads" tab
        tr["trf_blocks.0.att.weights"][0], labels, 0, default=False)
    add("Attention", "attention.context_figure", attention.context_figure,  # the "Context vectors" tab
        tr["trf_blocks.0.att.context"][0, :, :head_dim], labels, 0, 0, default=False)

    # Predictions (row 0, k=5, temperature 1)
    row_logits = tr["logits"][0]
    V = row_logits.shape[-1]
    token_array = np.asarray(ids)
    normalizer = predictions.log_normalizer(row_logits, TEMPERATURE)
    top = predictions.top_k(row_logits, K, TEMPERATURE, normalizer)
    after = predictions.continuations(row_logits, token_array, TEMPERATURE, normalizer)

    def top_k_args(positions):
        return (positions, top.ids[positions], top.logits[positions], top.probs[positions], token_array,
                after.ranks[positions], after.probs[positions], after.logits[positions], TEMPERATURE, V)

    small = T <= SMALL_MULTIPLES
    add("Predictions", "predictions.top_k_bars", prediction_charts.top_k_bars,
        *top_k_args(np.arange(T) if small else np.array([T - 1])))
    if not small:  # what a text of 8 tokens shows: one panel per position
        add("Predictions", "predictions.top_k_bars, 8 panels", prediction_charts.top_k_bars,
            *top_k_args(np.arange(T - SMALL_MULTIPLES, T)), default=False)
    columns = predictions.readable_columns(top)
    column_ids = np.broadcast_to(columns, (T, len(columns)))
    add("Predictions", "predictions.logits_heatmap", prediction_charts.logits_heatmap, row_logits[:, columns],
        predictions.probabilities_of(row_logits, column_ids, TEMPERATURE, normalizer), columns, token_array,
        TEMPERATURE, V)
    buckets = predictions.vocab_buckets(row_logits)
    add("Predictions", "predictions.full_vocab_heatmap", prediction_charts.full_vocab_heatmap, buckets.maxima,
        buckets.starts, buckets.width, token_array, V, default=False)

    # Generate (first text as the prompt, 10 greedy steps)
    steps = walk(PrefixLogits(built.model, cfg["context_length"]), ids, GEN_STEPS, temperature=0.0, top_p=1.0,
                 seed=123, eos_id=tokenizer.ENDOFTEXT_ID)
    add("Generate", "generate.run_figure", generate.run_figure, steps)
    add("Generate", "generate.pipeline_figure", generate.pipeline_figure, steps[0], 0.0, 0, 1.0)

    # common.heatmap on its own: what every heatmap above is built on
    add("(common)", "common.heatmap (T, emb_dim)", common.heatmap, emb[0], "embeddings", "dim", "token",
        labels, default=False)
    return calls


def best_of(call, repeats: int) -> dict:
    """Best build ms, best to_json ms, best sum of the two over `repeats` runs, and the JSON's kB."""
    spec = pio.to_json(call(), validate=False)  # warm-up
    builds, jsons, totals = [], [], []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fig = call()
        built = time.perf_counter()
        spec = pio.to_json(fig, validate=False)
        done = time.perf_counter()
        builds.append(built - start)
        jsons.append(done - built)
        totals.append(done - start)
    return {"build_ms": 1000 * min(builds), "json_ms": 1000 * min(jsons), "total_ms": 1000 * min(totals),
            "kb": len(spec) / 1000}


def load_baseline(path: str | None) -> dict:
    if not path:
        return {}
    rows = json.loads(Path(path).read_text())["rows"]
    return {(r["tokens"], r["builder"]): r for r in rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="32,128", help="input lengths (tokens in the one batch row)")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per builder; the best is kept")
    parser.add_argument("--baseline", help="an earlier run's JSON: show its totals beside these")
    parser.add_argument("--name", default="charts", help="results go to artifacts/bench/<name>.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(describe_machine(machine()))
    baseline = load_baseline(args.baseline)
    print(f"124M GPTModel, B=1, torch threads 1, best of {args.repeats} runs after 1 warm-up; "
          "build = the builder, json = plotly.io.to_json(fig, validate=False)\n")
    built = build_model(ModelSpec(kind=GPT, config=config_key(GPT_CONFIG_124M)))
    rows, totals = [], []
    before = "  before ms  ratio" if baseline else ""
    for n in (int(t) for t in args.tokens.split(",")):
        ids = list(token_ids(n)[0])
        print(f"--- {n} tokens " + "-" * 60)
        print(f"{'builder':44s} {'build ms':>9s} {'json ms':>8s} {'total ms':>9s} {'kB':>7s}{before}")
        page_sum = {page: 0.0 for page in PAGES}
        page_before = {page: 0.0 for page in PAGES}
        for page, name, call, default in page_calls(built, ids):
            cell = best_of(call, args.repeats)
            rows.append({"tokens": n, "page": page, "builder": name, "default_view": default, **cell})
            old = baseline.get((n, name))
            extra = f"  {old['total_ms']:9.1f}  {old['total_ms'] / cell['total_ms']:4.1f}x" if old else ""
            mark = " " if default else "*"
            print(f"{name + mark:44s} {cell['build_ms']:9.1f} {cell['json_ms']:8.1f} {cell['total_ms']:9.1f} "
                  f"{cell['kb']:7.1f}{extra}")
            if default:
                page_sum[page] += cell["total_ms"]
                page_before[page] += old["total_ms"] if old else float("nan")
        print(f"\nper page, {n} tokens (figures drawn by default):")
        for page in PAGES:
            old = page_before[page] if baseline else None
            extra = f"   before {old:7.1f} ms  {old / page_sum[page]:4.1f}x" if old is not None else ""
            print(f"  {page:12s} {page_sum[page]:7.1f} ms{extra}")
            totals.append({"tokens": n, "page": page, "total_ms": page_sum[page],
                           **({"before_ms": old} if old is not None else {})})
        print()
    write_result(args.name, {"settings": {"repeats": args.repeats, "tokens": args.tokens, "torch_threads": 1,
                                          "baseline": args.baseline}, "rows": rows, "pages": totals})
    return 0


if __name__ == "__main__":
    sys.exit(main())
