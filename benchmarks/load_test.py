"""Many users at once on one replica: latency, errors, memory, and whether everyone sees their own numbers.

    .venv/bin/python benchmarks/load_test.py                      # 10 then 20 concurrent sessions
    .venv/bin/python benchmarks/load_test.py --sessions 10 --reruns 4 --max-minutes 10
    .venv/bin/python benchmarks/load_test.py --specs 4            # a fourth model in play (see below)

For each N in --sessions, a fresh server (benchmarks/_serve.py, which logs every script run) on
a port in 8670-8679 and one Debian Chromium with N separate browser contexts (N Streamlit
sessions with their own cookies and websockets), all at the same time. Each session opens the
Predictions page from a link with its own model, seed, dropout and text, then retypes its text
--reruns times (fill + Ctrl+Enter, as a user does) with a short random pause in between.

Measured per session: the first load (link -> notRunning and every chart drawn) and each warm
rerun (Ctrl+Enter -> notRunning and charts drawn, on the page's clock); tracebacks shown; the
idx_next the page prints. Server: peak and current RSS (VmHWM/VmRSS from /proc, children
included) before the sessions and after; every script run's duration from the server's own log.

Each idx_next is then recomputed outside the app (gptviz.build + gptviz.trace, the same batch
rules as gptviz.ui) and must equal what the page showed: a mismatch means one session saw
another's model, trace or random numbers.

Model mix, by session index i: 124M DummyGPTModel (seed 123), 124M GPTModel (seed 123) and the
tiny GPTModel (seed 1 + i % 2 with --specs 4, else seed 1). Every session has its own text and
dropout on or off. The 124M models keep seed 123: each extra seed is another 0.3-0.65 GB model,
and gptviz.ui.get_model keeps what fits in GPTVIZ_MODEL_CACHE_MB (default 700 MiB), so sessions on
different 124M models make it rebuild them in turn (--specs 4 shows what a fourth costs).

Budget for "holds N sessions": p95 of the warm reruns <= 1 s in the browser, no tracebacks,
no mismatches. Chromium runs on the same cores as the server, so on a 2-core machine the
browser's own rendering of N tabs is part of every number. Results: artifacts/bench/load_test.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import statistics
import sys
import time

from _report import BUDGETS, ROOT, describe_machine, load_average, machine, write_result
from _server import _DRAWN, _STATE_OBSERVER, CHROMIUM_ARGS, VIEWPORT, Server, _descendants, free_port

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import browser as tb  # noqa: E402  selectors and the Chromium path shared with the browser tests

PORTS = range(8670, 8680)
ALL_CPUS = frozenset(os.sched_getaffinity(0))  # restored after each level, whatever happened
TINY = "tiny (teaching)"
DEFAULT_PRESET = "gpt2-small (124M)"
WORDS = ["Every", "A", "The", "Our", "One", "Some", "This", "Each", "My", "Your", "Their", "No"]
SUBJECTS = ["effort", "student", "teacher", "model", "token", "river", "garden", "window", "engine", "story"]
VERBS = ["moves", "finds", "builds", "reads", "turns", "holds", "makes", "sees"]
# The page states each row's next token as "... → token (id 1234, probability ...)"; the idx_next
# code block says the same, but code blocks draw lazily and may still be empty when a run is over.
NEXT_ID = re.compile(r"\(id (\d+), probability")


def session_plan(i: int, n_specs: int, reruns: int, rng: random.Random) -> dict:
    """Model, seed, dropout and the texts session i types."""
    kind = i % 3
    if kind == 0:
        model = {"model": "skeleton", "preset": DEFAULT_PRESET, "seed": 123}
    elif kind == 1:
        model = {"model": "gpt", "preset": TINY, "seed": 1 + (i % 2 if n_specs >= 4 else 0)}
    else:
        model = {"model": "gpt", "preset": DEFAULT_PRESET, "seed": 123}
    texts = []
    for r in range(reruns + 1):
        words = [rng.choice(WORDS), rng.choice(SUBJECTS), rng.choice(VERBS), "you", f"{i}", f"{r}"]
        words += rng.sample(SUBJECTS, k=rng.randint(0, 6))
        texts.append(" ".join(words))
    return {**model, "dropout": i % 4 != 3, "text2": "" if i % 2 else "Every day holds a", "texts": texts}


def link(plan: dict, text: str) -> str:
    from urllib.parse import urlencode

    query = {"model": plan["model"], "preset": plan["preset"], "seed": plan["seed"],
             "dropout": str(plan["dropout"]).lower(), "text2": plan["text2"], "text": text}
    return "/Predictions?" + urlencode(query)


# --- one browser session ------------------------------------------------------------------------


async def wait_run(page, since_ms: float, timeout_s: float) -> dict:
    """A run that started after since_ms (page clock) finished and its charts are drawn."""
    await page.wait_for_function(
        """(since) => { const s = window.__states.filter(x => x[0] >= since);
             const i = s.findIndex(x => x[1] === 'running');
             return i >= 0 && s.slice(i).some(x => x[1] === 'notRunning'); }""",
        arg=since_ms, timeout=timeout_s * 1000, polling=25,
    )
    drawn = await (await page.wait_for_function(_DRAWN, timeout=timeout_s * 1000, polling=25)).json_value()
    return {"drawn_ms": drawn}


async def read_result(page) -> dict:
    text = await page.locator(tb.MAIN).inner_text()
    ids = NEXT_ID.findall(text)
    exceptions = await page.locator(tb.EXCEPTION).all_inner_texts()
    result = {"idx_next": str([[int(i)] for i in ids]) if ids else None, "exceptions": [e[:2000] for e in exceptions]}
    if not ids:  # say what the page showed instead
        result["main_text"] = text[:1500]
        result["url"] = page.url
    return result


async def run_session(browser, base_url: str, i: int, plan: dict, args, rng: random.Random, start_gate) -> dict:
    """Open the link, then retype the text; returns timings and what the page showed for each text."""
    out = {"session": i, "plan": {k: v for k, v in plan.items() if k != "texts"}, "steps": [], "page_errors": []}
    context = await browser.new_context(base_url=base_url, viewport=VIEWPORT)
    try:
        await context.add_init_script(_STATE_OBSERVER)
        page = await context.new_page()
        page.on("pageerror", lambda e: out["page_errors"].append(str(e)[:300]))
        await start_gate.wait()
        await asyncio.sleep(rng.uniform(0, args.stagger))  # people do not all click at the same millisecond
        t0 = time.perf_counter()
        await page.goto(link(plan, plan["texts"][0]), wait_until="domcontentloaded", timeout=args.first_timeout * 1000)
        await wait_run(page, 0.0, args.first_timeout)
        out["first_load_s"] = time.perf_counter() - t0
        out["steps"].append({"text": plan["texts"][0], "kind": "first", **await read_result(page)})
        box = page.locator(tb.TEXT_AREA)
        for text in plan["texts"][1:]:
            await asyncio.sleep(rng.uniform(*args.think))
            mark = await page.evaluate("performance.now()")
            await box.fill(text, timeout=args.rerun_timeout * 1000)
            await box.press("Control+Enter", timeout=args.rerun_timeout * 1000)
            timing = await wait_run(page, mark, args.rerun_timeout)
            out["steps"].append({"text": text, "kind": "rerun", "latency_ms": timing["drawn_ms"] - mark,
                                 **await read_result(page)})
        if args.screenshots and i < 2:
            path = ROOT / "artifacts" / "bench" / f"load_test_session{i}.png"
            await page.screenshot(path=str(path))
    except Exception as error:  # a timeout or a crashed page is a result, not the end of the run
        out["error"] = f"{type(error).__name__}: {str(error)[:500]}"
        with contextlib.suppress(Exception):
            path = ROOT / "artifacts" / "bench" / f"load_test_failed_session{i}.png"
            await page.screenshot(path=str(path), timeout=20_000)
            out["screenshot"] = str(path.relative_to(ROOT))
    finally:
        await context.close()
    return out


def chromium() -> str:
    path = tb.chromium_path()
    if path is None:
        raise RuntimeError("Chromium is missing (apt-get install chromium); Playwright must not download one")
    return path


async def warm_up(base_url: str, plans: list[dict], args) -> None:
    """Open each distinct model once, one after the other, so the sessions meet a warm server."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            for plan in {(pl["model"], pl["preset"], pl["seed"]): pl for pl in plans}.values():
                context = await browser.new_context(base_url=base_url, viewport=VIEWPORT)
                await context.add_init_script(_STATE_OBSERVER)
                page = await context.new_page()
                await page.goto(link(plan, "Warming up"), wait_until="domcontentloaded", timeout=args.first_timeout * 1000)
                await wait_run(page, 0.0, args.first_timeout)
                await context.close()
        finally:
            await browser.close()


async def drive(base_url: str, plans: list[dict], args) -> list[dict]:
    from playwright.async_api import async_playwright

    n = len(plans)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            gate = asyncio.Event()
            tasks = [asyncio.create_task(run_session(browser, base_url, i, plans[i], args,
                                                     random.Random(args.rng_seed * 1000 + i), gate))
                     for i in range(n)]
            gate.set()
            return await asyncio.gather(*tasks)
        finally:
            await browser.close()


# --- what the same inputs give alone ----------------------------------------------------------------


class Expected:
    """idx_next for a plan and a text, computed with gptviz directly (no Streamlit, no shared cache)."""

    def __init__(self):
        self.models = {}

    def __call__(self, plan: dict, text: str) -> str:
        from gptviz import ui
        from gptviz.build import GPT, SKELETON, ModelSpec, build_model
        from gptviz.config import PRESETS, config_key
        from gptviz.trace import trace

        cfg = PRESETS[plan["preset"]]
        kind = SKELETON if plan["model"] == "skeleton" else GPT
        spec = ModelSpec(kind, config_key(cfg), seed=plan["seed"])
        if spec not in self.models:
            self.models[spec] = build_model(spec)
        built = self.models[spec]
        ids, _, _ = ui._batch(text, plan["text2"], cfg["context_length"])
        generator = built.dropout_generator() if plan["dropout"] else None
        logits = trace(built.model, ids, keep=("logits",), dropout_generator=generator)["logits"]
        return str([[int(i)] for i in logits[:, -1, :].argmax(-1)])


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and everything it started."""
    total = 0
    for p in _descendants(pid):
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def run_level(n: int, args, expected: Expected) -> dict:
    """One server, n sessions at once; returns everything measured."""
    port = free_port(PORTS)
    env = {"OMP_NUM_THREADS": str(args.torch_threads)} if args.torch_threads else None
    all_cpus = ALL_CPUS
    if args.split_cores:  # the server inherits core 0; Chromium (started later) gets the others
        os.sched_setaffinity(0, {min(all_cpus)})
    with Server(env=env, port=port) as server:
        if args.split_cores:
            os.sched_setaffinity(0, all_cpus - {min(all_cpus)} or all_cpus)
        server.wait_healthy(90)
        rng = random.Random(args.rng_seed)
        plans = [session_plan(i, args.specs, args.reruns, rng) for i in range(n)]
        warmup_s, start = None, server.memory_mb()
        if args.warmup:
            t = time.perf_counter()
            asyncio.run(asyncio.wait_for(warm_up(server.url, plans, args), timeout=args.max_minutes * 60))
            warmup_s = time.perf_counter() - t
        before = server.memory_mb()
        load_before = load_average()
        wall0 = time.time()
        t0 = time.perf_counter()
        server_cpu0, (busy0, total0) = process_cpu_s(server.proc.pid), machine_cpu_s()
        sessions = asyncio.run(asyncio.wait_for(drive(server.url, plans, args), timeout=args.max_minutes * 60))
        elapsed = time.perf_counter() - t0
        server_cpu = process_cpu_s(server.proc.pid) - server_cpu0
        busy1, total1 = machine_cpu_s()
        after = server.memory_mb()
        runs = server.runs(since=wall0)
    os.sched_setaffinity(0, all_cpus)
    mismatches, errors, latencies, first_loads = [], [], [], []
    for s in sessions:
        if "error" in s:
            errors.append(f"session {s['session']}: {s['error']}")
        errors += [f"session {s['session']}: uncaught JS error {e}" for e in s["page_errors"]]
        if "first_load_s" in s:
            first_loads.append(s["first_load_s"])
        for step in s["steps"]:
            if step["exceptions"]:
                errors.append(f"session {s['session']}: traceback after text {step['text']!r}: {step['exceptions'][0][:600]}")
            if step["kind"] == "rerun":
                latencies.append(step["latency_ms"])
            want = expected(s["plan"], step["text"])
            step["expected_idx_next"] = want
            if step["idx_next"] != want:
                mismatches.append({"session": s["session"], "plan": s["plan"], "text": step["text"],
                                   "shown": step["idx_next"], "expected": want})
    exec_ms = [1000 * r["exec_s"] for r in runs]
    p95 = percentile(latencies, 0.95)
    return {
        "sessions": n,
        "warmup_s": warmup_s,
        "elapsed_s": elapsed,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "reruns_measured": len(latencies),
        "rerun_ms_p50": percentile(latencies, 0.5),
        "rerun_ms_p95": p95,
        "rerun_ms_max": max(latencies) if latencies else None,
        "first_load_s_p50": statistics.median(first_loads) if first_loads else None,
        "first_load_s_max": max(first_loads) if first_loads else None,
        "server_exec_ms_p50": percentile(exec_ms, 0.5),
        "server_exec_ms_p95": percentile(exec_ms, 0.95),
        "server_script_runs": len(runs),
        # Where the 2 cores went: the server, and everything else (Chromium's N tabs, other jobs).
        "server_cpu_s": server_cpu,
        "server_cores_used": server_cpu / elapsed,
        "machine_cores_busy": (busy1 - busy0) / elapsed,
        "machine_cores": (total1 - total0) / elapsed,
        "rss_start_mb": start,  # the bare server
        "rss_before_mb": before,  # after the warm-up: every model built
        "rss_after_mb": after,
        "errors": errors,
        "mismatches": mismatches,
        "within_budget": bool(p95 is not None and p95 <= BUDGETS["warm_browser_ms"] and not errors and not mismatches
                              and len(latencies) == n * args.reruns),
        "session_details": sessions,
    }


def print_level(r: dict) -> None:
    fmt = lambda v, unit="": "-" if v is None else f"{v:.0f}{unit}"  # noqa: E731
    print(f"\n== {r['sessions']} concurrent sessions ({r['elapsed_s']:.0f} s; load average "
          f"{r['load_average_before'][0]:.1f} -> {r['load_average_after'][0]:.1f})")
    print(f"  warm rerun in the browser: p50 {fmt(r['rerun_ms_p50'], ' ms')}, p95 {fmt(r['rerun_ms_p95'], ' ms')}, "
          f"max {fmt(r['rerun_ms_max'], ' ms')} over {r['reruns_measured']} reruns")
    print(f"  server script run: p50 {fmt(r['server_exec_ms_p50'], ' ms')}, p95 {fmt(r['server_exec_ms_p95'], ' ms')} "
          f"over {r['server_script_runs']} runs")
    print(f"  CPU: the server used {r['server_cpu_s']:.0f} s ({r['server_cores_used']:.2f} cores on average); "
          f"the machine was busy {r['machine_cores_busy']:.2f} of {r['machine_cores']:.1f} cores (browser, other jobs)")
    print(f"  first load: median {r['first_load_s_p50'] or 0:.1f} s, max {r['first_load_s_max'] or 0:.1f} s")
    s0, b, a = r["rss_start_mb"], r["rss_before_mb"], r["rss_after_mb"]
    print(f"  server RSS: bare {s0['rss_mb']:.0f} MB; models built {b['rss_mb']:.0f} MB (peak {b['peak_rss_mb']:.0f}); "
          f"after the sessions {a['rss_mb']:.0f} MB (peak {a['peak_rss_mb']:.0f})"
          + (f"; warm-up {r['warmup_s']:.0f} s" if r.get("warmup_s") else ""))
    print(f"  errors: {len(r['errors'])}" + "".join(f"\n    {e}" for e in r["errors"][:10]))
    print(f"  idx_next mismatches: {len(r['mismatches'])}" + "".join(f"\n    {m}" for m in r["mismatches"][:5]))
    print(f"  [{'PASS' if r['within_budget'] else 'FAIL'}] {r['sessions']} sessions within budget "
          f"(warm rerun p95 <= {BUDGETS['warm_browser_ms']} ms, no errors, no mismatches)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="10,20", help="concurrent sessions per level, e.g. 10,20")
    parser.add_argument("--reruns", type=int, default=4, help="text changes per session after the first load")
    parser.add_argument("--specs", type=int, default=3, choices=(3, 4), help="distinct models in play (see doc)")
    parser.add_argument("--think", type=float, nargs=2, default=(2.0, 6.0),
                        help="pause between reruns, s (min max): a student retyping a sentence")
    parser.add_argument("--stagger", type=float, default=5.0, help="sessions open within this many seconds")
    parser.add_argument("--first-timeout", type=float, default=240, help="s for a first load (builds the models)")
    parser.add_argument("--rerun-timeout", type=float, default=90, help="s for one rerun")
    parser.add_argument("--max-minutes", type=float, default=12, help="hard bound per level")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="OMP_NUM_THREADS for the server (0: torch's default, one per core)")
    parser.add_argument("--split-cores", action="store_true",
                        help="pin the server to one core and Chromium to the rest, so the N browser tabs "
                             "(which a real class runs on its own machines) do not take the server's CPU")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="start the sessions on a cold server (by default each model is built first)")
    parser.add_argument("--rng-seed", type=int, default=20)
    parser.add_argument("--screenshots", action="store_true", help="a PNG of two sessions' last view")
    parser.add_argument("--out", default="load_test")
    args = parser.parse_args(argv)
    # A SIGTERM (e.g. `timeout`) unwinds like an error, so the server's context manager kills it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    levels = [int(x) for x in args.sessions.split(",") if x.strip()]

    print(describe_machine(machine()))
    expected = Expected()
    results = []
    for n in levels:
        try:
            result = run_level(n, args, expected)
        except (asyncio.TimeoutError, TimeoutError):
            os.sched_setaffinity(0, ALL_CPUS)
            result = {"sessions": n, "within_budget": False, "errors": [f"did not finish in {args.max_minutes} min"]}
            print(f"\n== {n} sessions: did not finish within {args.max_minutes} min")
        else:
            print_level(result)
        results.append(result)
    held = [r["sessions"] for r in results if r.get("within_budget")]
    summary = (f"one replica held {max(held)} concurrent sessions within budget" if held
               else "no level stayed within budget")
    print(f"\n{summary} (levels tried: {levels}; specs: {args.specs}"
          + ("; server pinned to one core" if args.split_cores else "") + ")")
    write_result(args.out, {"levels": results, "summary": summary, "options": vars(args)})
    return 0 if all(not r.get("errors") and not r.get("mismatches") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
