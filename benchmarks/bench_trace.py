"""Latency of gptviz.trace: one forward pass with the intermediates a page keeps.

    .venv/bin/python benchmarks/bench_trace.py [--repeats 5] [--tokens 8,32,128,1024] [--quick]

Models, built as the app builds them (gptviz.build.build_model, seed 123, eval mode, no grad):
the tiny preset (GPTModel), the 124M skeleton (DummyGPTModel) and the 124M GPTModel.
Inputs: one row (B=1) of real GPT-2 tokens, 8, 32, 128 and 1024 long (lengths beyond a
model's context_length are skipped). Dropout on, with the model's own generator, as the
app's default (`dropout=True`) does. Keeps:

    full         keep=None: every intermediate (what a page gets if it asks for everything)
    logits       ("logits",): the Predictions page
    attn_layer0  ("trf_blocks.0.att.*",): one layer's attention, as the Attention page shows

Then, for the 124M GPTModel at 32 tokens: k sessions tracing at once (threads, as
Streamlit runs each session's script in its own thread), median latency and throughput.

Each cell is the median of --repeats timed runs after one warm-up, with torch's threads
as on the machine (--threads to change). Printed: wall-clock ms and, in the JSON, the
CPU ms of all threads (less sensitive to other load on a shared machine). Also reported:
the megabytes the returned trace holds (what the app's trace cache keeps per entry).
Results: artifacts/bench/trace_threads<N>.json (N = torch threads).
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time

from _report import MB, ROOT, describe_machine, machine, median, write_result

sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from gptviz import tokenizer  # noqa: E402
from gptviz.build import GPT, SKELETON, ModelSpec, build_model  # noqa: E402
from gptviz.config import PRESETS, config_key  # noqa: E402
from gptviz.trace import trace  # noqa: E402

MODELS = {
    "tiny GPTModel": (GPT, "tiny (teaching)"),
    "124M DummyGPTModel": (SKELETON, "gpt2-small (124M)"),
    "124M GPTModel": (GPT, "gpt2-small (124M)"),
}
KEEPS = {
    "full": None,
    "logits": ("logits",),
    "attn_layer0": ("trf_blocks.0.att.*",),
}
PASSAGE = (
    "Every effort moves you forward. A teacher types a sentence, and the class follows each token "
    "through the embeddings, the attention heads and the feed-forward layers to the logits. "
)


def token_ids(n: int) -> tuple:
    ids = tokenizer.encode(PASSAGE * (1 + n // 20))[:n]
    assert len(ids) == n, (len(ids), n)
    return (tuple(ids),)


def time_trace(built, ids, keep, repeats: int, dropout: bool):
    """Wall seconds and CPU seconds (all threads) of each timed run, and the bytes the trace keeps."""

    def once():
        generator = built.dropout_generator() if dropout else None
        start, cpu = time.perf_counter(), time.process_time()
        result = trace(built.model, ids, keep=keep, dropout_generator=generator)
        return time.perf_counter() - start, time.process_time() - cpu, result

    *_, result = once()  # warm-up (allocator, kernels)
    kept_bytes = sum(v.nbytes for v in result.values.values())
    del result
    times, cpu_times = [], []
    for _ in range(repeats):
        seconds, cpu, result = once()
        times.append(seconds)
        cpu_times.append(cpu)
        del result
        gc.collect()
    return times, cpu_times, kept_bytes


def concurrent_traces(built, ids, keep, sessions: int, repeats: int, dropout: bool) -> dict:
    """`sessions` threads tracing at once, as that many students retyping together on one server.

    Each Streamlit session runs its script in its own thread; each thread calling into torch
    brings its own team of torch threads, so on 2 cores k sessions mean k x threads workers.
    """
    latencies, lock = [], threading.Lock()

    def worker():
        for _ in range(repeats):
            generator = built.dropout_generator() if dropout else None
            start = time.perf_counter()
            trace(built.model, ids, keep=keep, dropout_generator=generator)
            with lock:
                latencies.append(time.perf_counter() - start)

    workers = [threading.Thread(target=worker) for _ in range(sessions)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    return {"sessions": sessions, "median_ms": 1000 * median(latencies), "max_ms": 1000 * max(latencies),
            "traces_per_s": len(latencies) / wall}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", default="8,32,128,1024")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated names from: " + ", ".join(MODELS))
    parser.add_argument("--no-dropout", action="store_true", help="trace without dropout (the app's toggle off)")
    parser.add_argument("--quick", action="store_true", help="2 repeats, up to 128 tokens")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, i.e. the machine's cores)")
    parser.add_argument("--concurrency", default="1,2,4",
                        help="also time 124M GPTModel, 32 tokens, keep logits, with this many sessions at once ('' to skip)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.tokens = 2, "8,32,128"
    lengths = [int(t) for t in args.tokens.split(",")]
    info = machine()
    print(describe_machine(info))
    print(f"torch threads {torch.get_num_threads()}, dropout {'off' if args.no_dropout else 'on'}, "
          f"median of {args.repeats} runs after 1 warm-up, B=1\n")
    rows = []
    settings = {"repeats": args.repeats, "batch": 1, "dropout": not args.no_dropout,
                "torch_threads": torch.get_num_threads(), "keeps": dict(KEEPS)}
    header = f"{'model':20s} {'tokens':>6s} " + " ".join(f"{k + ' ms (cpu)':>20s}" for k in KEEPS) + "   MB kept: " + \
        " / ".join(KEEPS)
    for name in args.models.split(","):
        kind, preset = MODELS[name]
        cfg = PRESETS[preset]
        start = time.perf_counter()
        built = build_model(ModelSpec(kind=kind, config=config_key(cfg), seed=123))
        build_seconds = time.perf_counter() - start
        print(f"{name}: built in {build_seconds:.2f} s")
        print(header)
        for n in lengths:
            if n > cfg["context_length"]:
                print(f"{name:20s} {n:6d}  skipped: beyond context_length {cfg['context_length']}")
                continue
            ids = token_ids(n)
            cells = {}
            for keep_name, keep in KEEPS.items():
                repeats = max(2, args.repeats // 2) if n >= 1024 else args.repeats
                times, cpu_times, kept = time_trace(built, ids, keep, repeats, not args.no_dropout)
                cells[keep_name] = {"median_ms": 1000 * median(times), "runs_ms": [1000 * t for t in times],
                                    "cpu_ms_median": 1000 * median(cpu_times), "kept_mb": kept / MB}
            rows.append({"model": name, "tokens": n, "build_seconds": build_seconds, "keeps": cells})
            print(f"{name:20s} {n:6d} "
                  + " ".join(f"{cells[k]['median_ms']:11.1f} ({cells[k]['cpu_ms_median']:6.0f})" for k in KEEPS)
                  + "   " + " / ".join(f"{cells[k]['kept_mb']:.1f}" for k in KEEPS))
            # written after every row: a run cut short keeps what it measured
            write_result(f"trace_threads{torch.get_num_threads()}", {"settings": settings, "rows": rows}, quiet=True)
        if name == "124M GPTModel" and args.concurrency:
            print(f"{name}, 32 tokens, keep logits, several sessions tracing at once "
                  f"({torch.get_num_threads()} torch threads each):")
            concurrency = []
            for k in (int(x) for x in args.concurrency.split(",")):
                c = concurrent_traces(built, token_ids(32), ("logits",), k, max(2, args.repeats // 2), not args.no_dropout)
                concurrency.append(c)
                print(f"  {k} at once: median {c['median_ms']:7.1f} ms per trace, slowest {c['max_ms']:7.1f} ms, "
                      f"{c['traces_per_s']:.1f} traces/s")
            settings["concurrency"] = concurrency
        del built
        gc.collect()
        print()
    write_result(f"trace_threads{torch.get_num_threads()}", {"settings": settings, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
