"""Greedy generation speed: gptviz.generate (KV cache) against Hugging Face's GPT-2.

    .venv/bin/python benchmarks/bench_generate.py [--new-tokens 64] [--prompt-tokens 16]
                                                  [--repeats 5] [--warmup 1] [--out PATH]

Both models have the GPT-2 124M shape with an untied output head, as the course's GPTModel
(random weights: the speed depends on the shapes, not the values), run on the CPU with the same number of threads (every core this process
may use), in eval mode, without gradients. Each timed call is one whole generation of the
same prompt: prefill plus `--new-tokens` decode steps, so tokens/s = new tokens / seconds.
The two are timed alternately, after warm-up calls; the median of the repeats decides
(the best run and the process CPU time per token are reported too: on a shared machine
they are less sensitive to other processes' load, which is recorded as well). Hugging
Face runs `generate(do_sample=False, use_cache=True)` with min_new_tokens = max_new_tokens,
so a random model emitting <|endoftext|> cannot stop it early.

With --with-simple, the course's `generate_text_simple` (no cache) is timed once as well,
and checked to choose the same tokens as gptviz.generate (slow: every step recomputes
the whole sequence).

Writes the numbers as JSON (default: benchmarks/bench_generate.json) and exits with
status 1 if gptviz is slower than Hugging Face.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import gptviz  # noqa: E402
from gptviz.generation import generate, generate_text_simple  # noqa: E402
from gptviz.weights import hf_config  # noqa: E402


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def build_models(cfg):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        ours = gptviz.GPTModel(cfg)
        # Untied like the course's GPTModel: both have a separate 50257 x 768 output head.
        theirs = GPT2LMHeadModel(GPT2Config(**hf_config(cfg, tied=False)))
    for model in (ours, theirs):
        model.requires_grad_(False)
        model.eval()
    return ours, theirs


def timed(fn):
    """(wall seconds, process CPU seconds, result) of one call."""
    cpu, start = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def load_average():
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=available_cores())
    parser.add_argument("--with-simple", action="store_true", help="also time the course's generate_text_simple")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "bench_generate.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = dict(gptviz.GPT_CONFIG_124M)
    ours, theirs = build_models(cfg)
    prompt = torch.randint(0, cfg["vocab_size"], (1, args.prompt_tokens), generator=torch.Generator().manual_seed(0))
    n_new = args.new_tokens
    hf_pad_id = theirs.config.eos_token_id

    def run_ours():
        return generate(ours, prompt, max_new_tokens=n_new, context_size=cfg["context_length"])

    def run_theirs():
        with torch.inference_mode():
            return theirs.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                use_cache=True,
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                pad_token_id=hf_pad_id,
            )

    load_before = load_average()
    for _ in range(args.warmup):
        run_ours()
        run_theirs()
    runs = {"gptviz": [], "transformers": []}
    order = [("gptviz", run_ours), ("transformers", run_theirs)]
    for i in range(args.repeats):  # interleaved, first one then the other first: drift hits both alike
        for name, run in order if i % 2 == 0 else order[::-1]:
            wall, cpu, out = timed(run)
            assert out.shape == (1, args.prompt_tokens + n_new), out.shape
            runs[name].append((wall, cpu))
    load_after = load_average()

    def summary(pairs):
        walls = [w for w, _ in pairs]
        cpus = [c for _, c in pairs]
        median = statistics.median(walls)
        return {
            "seconds": walls,
            "median_seconds": median,
            "tokens_per_second": n_new / median,
            "ms_per_token": 1000 * median / n_new,
            "best_tokens_per_second": n_new / min(walls),
            "cpu_seconds": cpus,
            "median_cpu_ms_per_token": 1000 * statistics.median(cpus) / n_new,
        }

    result = {
        "benchmark": "greedy generation, GPT-2 124M shape, random weights, CPU",
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": n_new,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "hf_attn_implementation": theirs.config._attn_implementation,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "gptviz": summary(runs["gptviz"]),
        "transformers_generate": summary(runs["transformers"]),
    }
    ours_r, theirs_r = result["gptviz"], result["transformers_generate"]
    ratio = ours_r["tokens_per_second"] / theirs_r["tokens_per_second"]
    result["speed_ratio_gptviz_over_transformers"] = ratio
    result["speed_ratio_best_runs"] = ours_r["best_tokens_per_second"] / theirs_r["best_tokens_per_second"]
    result["cpu_time_ratio_transformers_over_gptviz"] = (
        theirs_r["median_cpu_ms_per_token"] / ours_r["median_cpu_ms_per_token"]
    )
    same_tokens = None
    if args.with_simple:
        wall, _, simple_out = timed(
            lambda: generate_text_simple(ours, prompt, max_new_tokens=n_new, context_size=cfg["context_length"])
        )
        same_tokens = torch.equal(simple_out, run_ours())
        result["generate_text_simple_once"] = {
            "seconds": wall,
            "tokens_per_second": n_new / wall,
            "same_tokens_as_gptviz_generate": same_tokens,
        }

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"threads {result['threads']}, prompt {args.prompt_tokens} tokens, {n_new} new tokens, "
          f"median of {args.repeats} (after {args.warmup} warm-up); load average {load_before} -> {load_after}")
    for name, r in (("gptviz.generate (KV cache)", ours_r), ("transformers GPT2 generate", theirs_r)):
        print(f"  {name:30s} {r['tokens_per_second']:7.1f} tokens/s  ({r['ms_per_token']:.1f} ms/token; "
              f"best run {r['best_tokens_per_second']:.1f} tokens/s; CPU {r['median_cpu_ms_per_token']:.1f} ms/token)")
    if args.with_simple:
        s = result["generate_text_simple_once"]
        print(f"  {'generate_text_simple (course)':30s} {s['tokens_per_second']:7.1f} tokens/s  (one run; "
              f"same tokens as generate: {same_tokens})")
    print(f"  ratio gptviz / transformers: {ratio:.2f}x (median), {result['speed_ratio_best_runs']:.2f}x (best runs), "
          f"{result['cpu_time_ratio_transformers_over_gptviz']:.2f}x (CPU time)")
    print(f"wrote {args.out}")
    return 0 if ratio >= 1 and same_tokens is not False else 1


if __name__ == "__main__":
    sys.exit(main())
