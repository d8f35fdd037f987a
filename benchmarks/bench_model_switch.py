"""Server memory while a class switches models back and forth with long inputs.

    .venv/bin/python benchmarks/bench_model_switch.py                 # the default model cache
    .venv/bin/python benchmarks/bench_model_switch.py --env GPTVIZ_MODEL_CACHE_MB=1000

One server, one browser tab: the Predictions and Model pages at 300 tokens while the Model
goes skeleton -> gpt -> mix -> skeleton -> gpt (124M configs), so the model cache evicts and
rebuilds and the trace cache fills. `bench_app.py memory` measures the short version (32
tokens, one pass). Prints RSS after each page and the peak (VmHWM) against the 124M GPT
budget; writes artifacts/bench/model_switch[_KEY=VALUE].json. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys

from _report import BUDGETS, describe_machine, machine, verdict, write_result
from _server import Server, Tab, browser, page_paths
from bench_app import open_page, text_of

STEPS = [("skeleton", {}), ("gpt", {}), ("mix", {"parts": "attention"}), ("skeleton", {}), ("gpt", {})]
PAGES = ("Predictions", "Model")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server environment (repeatable)")
    args = parser.parse_args(argv)
    env = dict(kv.split("=", 1) for kv in args.env)
    print(describe_machine(machine()))
    paths, steps = page_paths(), []
    with browser() as b, Server(env=env) as server:
        server.wait_healthy(60)
        tab = Tab(b)
        try:
            for model, extra in STEPS:
                for page in PAGES:
                    open_page(server, tab, paths[page], model=model, text=text_of(args.tokens, 0), **extra)
                    steps.append({"model": model, "page": page, **server.memory_mb()})
                    print(f"  {model:8s} {page:12s} rss {steps[-1]['rss_mb']:6.0f} MB   peak {steps[-1]['peak_rss_mb']:6.0f} MB")
        finally:
            tab.close()
    peak = max(s["peak_rss_mb"] for s in steps)
    check = verdict(f"peak RSS, {args.tokens} tokens, " + " -> ".join(m for m, _ in STEPS) + f" {env or ''}",
                    peak, BUDGETS["gpt_peak_rss_mb"], "MB")
    suffix = "".join(f"_{k}={v}" for k, v in env.items())
    write_result(f"model_switch{suffix}", {"server_env": env, "tokens": args.tokens, "steps": steps,
                                           "peak_rss_mb": peak, "checks": [check]})
    return 0 if check["status"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
