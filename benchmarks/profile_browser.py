"""Where the browser's time goes in one page's warm rerun: a Chromium trace of it.

    .venv/bin/python benchmarks/profile_browser.py Embeddings [--js] [--model gpt] [--tokens 32] [--repeats 3] [--top 15]

Starts the app (benchmarks/_server.py), opens the page with a text of --tokens tokens,
retypes it once to warm everything up, then traces --repeats more retypes, one Chromium
trace each (headless Debian Chromium via Playwright). For each it prints the browser time
(typing to every chart drawn, as `bench_app.py warm` measures it); for the fastest one,
the renderer main thread's busy time and its trace events by total duration (JS calls,
layout, paint ...). With --js the trace also samples the JS stack (V8's CPU profiler:
this slows the page somewhat) and the functions with the most self and inclusive time
are printed. The fastest rerun's raw trace goes to artifacts/bench/browser_<page>.json
(open it in Chromium's DevTools, Performance tab, or https://ui.perfetto.dev).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

from _report import OUT_DIR, describe_machine, machine
from _server import Server, Tab, browser, page_paths
from bench_app import open_page, retype, text_of

CATEGORIES = ["devtools.timeline", "disabled-by-default-devtools.timeline", "v8", "blink.user_timing"]
JS_PROFILER = "disabled-by-default-v8.cpu_profiler"


def traced_rerun(server: Server, b, tab: Tab, text: str, js: bool) -> tuple[dict, list]:
    """One retype under a Chromium trace: (bench_app's measurement, the trace events)."""
    b.start_tracing(page=tab.page, categories=CATEGORIES + ([JS_PROFILER] if js else []))
    result = retype(server, tab, text)
    data = json.loads(b.stop_tracing())
    return result, data["traceEvents"] if isinstance(data, dict) else data


def main_thread(events: list) -> tuple:
    """(pid, tid) of the renderer's main thread: the one with the most RunTask time."""
    busy = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") == "RunTask":
            busy[(e["pid"], e["tid"])] += e.get("dur", 0)
    return busy.most_common(1)[0][0], busy


def event_totals(events: list, thread: tuple) -> collections.Counter:
    """Total duration (us) of each complete event on the thread, by name (nested events count in each)."""
    totals = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and (e["pid"], e["tid"]) == thread and e.get("name") != "RunTask":
            totals[e["name"]] += e.get("dur", 0)
    return totals


def js_profile(events: list, pid: int) -> tuple[collections.Counter, collections.Counter]:
    """Self and inclusive sampled time (us) per JS function, from the trace's ProfileChunk events."""
    nodes, samples, deltas = {}, [], []
    for e in events:
        if e.get("name") in ("Profile", "ProfileChunk") and e["pid"] == pid:
            data = e.get("args", {}).get("data", {})
            profile = data.get("cpuProfile", {}) or {}
            for node in profile.get("nodes", []) or []:
                nodes[node["id"]] = node
            samples += profile.get("samples", []) or []
            deltas += data.get("timeDeltas", []) or []
    # Trace-format profiles name each node's parent; DevTools-format ones list children.
    parent = {n["id"]: n["parent"] for n in nodes.values() if "parent" in n}
    parent.update({child: n["id"] for n in nodes.values() for child in n.get("children", []) or []})

    def name(node_id) -> str:
        frame = nodes[node_id].get("callFrame", {})
        where = frame.get("url", "").split("/")[-1][:40]
        return f"{frame.get('functionName') or '(anonymous)'}  {where}:{frame.get('lineNumber')}:{frame.get('columnNumber')}"

    self_us, inclusive_us = collections.Counter(), collections.Counter()
    for sample, dt in zip(samples, deltas):
        if sample not in nodes:
            continue
        self_us[name(sample)] += dt
        seen, node = set(), sample
        while node in nodes:  # every function on the stack once
            key = name(node)
            if key not in seen:
                inclusive_us[key] += dt
                seen.add(key)
            node = parent.get(node)
    return self_us, inclusive_us


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("page", help="page name as in the sidebar, e.g. Embeddings")
    parser.add_argument("--model", default="gpt")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="traced retypes; the fastest is analysed")
    parser.add_argument("--js", action="store_true", help="sample the JS stack too (V8 CPU profiler)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    info = machine()
    print(describe_machine(info))
    paths = page_paths()
    if args.page not in paths:
        parser.error(f"no page {args.page!r}; pages: {', '.join(paths)}")
    runs = []
    with Server(env={}) as server, browser() as b:
        server.wait_healthy(60)
        tab = Tab(b)
        open_page(server, tab, paths[args.page], model=args.model, text=text_of(args.tokens, 0))
        retype(server, tab, text_of(args.tokens, 1))  # warm: model, trace cache, plotly's code
        for i in range(args.repeats):
            result, events = traced_rerun(server, b, tab, text_of(args.tokens, 2 + i), args.js)
            print(f"  rerun {i + 1}: browser {result['browser_ms']:7.1f} ms, server {result['server_ms'] or 0:6.1f} ms, "
                  f"{result['bytes'] / 1000:.1f} kB, exceptions {result['exceptions']}")
            runs.append((result, events))
    result, events = min(runs, key=lambda r: r[0]["browser_ms"])
    print(f"\n{args.page}, warm rerun ({args.model}, {args.tokens} tokens): best browser time "
          f"{result['browser_ms']:.1f} ms of {len(runs)}{' (JS sampling on: slower)' if args.js else ''}")

    thread, busy = main_thread(events)
    print(f"renderer main thread busy (RunTask): {busy[thread] / 1000:.1f} ms; other threads: "
          + ", ".join(f"{us / 1000:.1f}" for _, us in busy.most_common(4)[1:]) + " ms")
    print("main-thread trace events, total ms (nested events also count in their parents):")
    for name, us in event_totals(events, thread).most_common(args.top):
        print(f"  {us / 1000:8.1f}  {name}")
    if args.js:
        self_us, inclusive_us = js_profile(events, thread[0])
        for title, counter in (("JS self time, sampled", self_us), ("JS inclusive time, sampled", inclusive_us)):
            print(f"{title} (ms):")
            for name, us in counter.most_common(args.top):
                print(f"  {us / 1000:8.1f}  {name}")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"browser_{args.page}.json"
    out.write_text(json.dumps({"traceEvents": events, "metadata": {"machine": info, "result": result}}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
