"""The app as a class sees it: cold start, warm reruns, bytes sent, server memory.

    .venv/bin/python benchmarks/bench_app.py all        # everything below, ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_app.py cold       # `streamlit run` -> first page drawn, each page opened first
    .venv/bin/python benchmarks/bench_app.py warm       # retype the text: server script time and browser time, per page
    .venv/bin/python benchmarks/bench_app.py bytes      # websocket bytes received per rerun, per page
    .venv/bin/python benchmarks/bench_app.py memory     # server peak RSS per model, and per extra browser session

Options: --pages Home,Tokens,... (default: every page that exists now), --repeats N,
--max-minutes M (a hard bound: the run stops, cleans up and reports what it has),
--edit end (warm: type a word at the end of the text each time instead of changing its first word),
--param KEY=VALUE (warm: a page setting from the URL, e.g. gen_steps=10).

The server is `streamlit run app.py` started through benchmarks/_serve.py (which logs
each script run's duration), on a port in 8650-8659, in its own process group, killed at
the end. The browser is Debian's Chromium driven by Playwright. Results are printed with
PASS/FAIL against the issue's budgets and written to artifacts/bench/app_<command>.json.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from _report import BUDGETS, MB, ROOT, describe_machine, machine, median, verdict, write_result
from _server import AgentSession, Server, Tab, browser, page_paths

sys.path.insert(0, str(ROOT))

from gptviz import tokenizer  # noqa: E402
from gptviz.ui import DEFAULT_TEXT  # noqa: E402

PASSAGE = (
    "Every effort moves you forward. A teacher types a sentence, and the class follows each token "
    "through the embeddings, the attention heads and the feed-forward layers to the logits. "
)
WORDS = ["Every", "Each", "One", "Some", "Any", "This", "That", "Our", "Your", "Their", "My", "His", "Her", "Its",
         "No", "All", "Both", "Many", "Few", "More", "Most", "Such", "What", "Which"]


def text_of(n_tokens: int, variant: int) -> str:
    """A real English text of exactly n_tokens GPT-2 tokens; each variant differs (its first word)."""
    if n_tokens <= 4:  # the default input, one word changed: same length, so the seed's batch of 2 stays
        return DEFAULT_TEXT if variant == 0 else f"{WORDS[variant % len(WORDS)]} effort moves you"
    words = WORDS[variant % len(WORDS)] + f" {variant // len(WORDS)}" * (variant >= len(WORDS))
    ids = tokenizer.encode(f"{words} effort moves you. " + PASSAGE * (1 + n_tokens // 20))[:n_tokens]
    text = tokenizer.decode(ids)
    while len(tokenizer.encode(text)) > n_tokens:  # BPE may merge across the cut
        text = text[:-1]
    return text


def edited_text(n_tokens: int, retype: int, edit: str, first: int = 0) -> str:
    """The text of the `retype`-th retype (0: the page's first load). edit="start": the first
    word changes, so nothing is shared with the text before; "end": one word more at the end
    each time, as a learner types on. `first`: the variant the texts start from (another
    session's texts must not be cache hits)."""
    if edit == "end":
        return text_of(n_tokens, first) + "".join(f" {w.lower()}" for w in WORDS[:retype])
    return text_of(n_tokens, first + retype)


# --- one page, opened then retyped -----------------------------------------------------------


def open_page(server: Server, tab: Tab, path: str, timeout_s: float = 180, **params) -> dict:
    """Open a page straight from a link and wait until its charts are drawn."""
    start = time.perf_counter()
    wall = time.time()
    tab.goto(server.page_url(path, **params), timeout_s)
    times = tab.wait_first_load(timeout_s, server, wall)
    runs = server.runs(since=wall)
    return {
        "browser_ms": 1000 * (time.perf_counter() - start),
        "server_ms": 1000 * sum(r["exec_s"] for r in runs),
        "bytes": tab.bytes_since(start),
        "exceptions": tab.exceptions(),
        "page_times_ms": times,
    }


def retype(server: Server, tab: Tab, text: str, timeout_s: float = 120, settle_s: float = 0.3) -> dict:
    """Type a new text (fill + Ctrl+Enter) and measure the rerun it causes.

    browser_ms: from typing to notRunning and every chart drawn (page clock);
    server_ms: the page script's run on the server (from _serve.py's log);
    bytes: websocket bytes the browser received for the rerun.
    """
    mark = tab.now()
    wall = time.time()
    start = time.perf_counter()
    tab.set_text(text)
    times = tab.wait_run_done(mark, timeout_s, server=server, since_wall=wall)
    time.sleep(settle_s)  # late frames of the same rerun (none expected) still count
    runs = server.runs(since=wall)
    first_token = tab.first_token_ms(mark)
    return {
        "browser_ms": times["drawn_ms"] - mark,
        "browser_first_token_ms": None if first_token is None else first_token - mark,  # Generate only
        "browser_not_running_ms": None if times["not_running_ms"] is None else times["not_running_ms"] - mark,
        "server_ms": 1000 * runs[-1]["exec_s"] if runs else None,
        "server_cpu_ms": 1000 * runs[-1].get("process_cpu_s", 0) if runs else None,
        "server_gc_ms": 1000 * server.gc_pauses_s(wall),  # from typing until drawn, plus settle_s
        "server_runs": len(runs),
        "bytes": tab.bytes_since(start),
        "exceptions": tab.exceptions(),
    }


def page_session(server, b, path, model, n_tokens, reruns, edit="start", params=None) -> dict:
    tab = Tab(b)
    try:
        first = open_page(server, tab, path, model=model, text=edited_text(n_tokens, 0, edit), **(params or {}))
        reruns_out = [retype(server, tab, edited_text(n_tokens, i, edit)) for i in range(1, reruns + 1)]
    except TimeoutError:
        raise  # --max-minutes
    except Exception as error:  # one page failing must not hide the others' numbers
        shot = tab.screenshot(f"failed-{path or 'Home'}-{model}-{n_tokens}")
        print(f"  {path or 'Home'} (model={model}, {n_tokens} tokens) FAILED: {str(error).splitlines()[0]}; "
              f"screenshot {shot.relative_to(ROOT)}")
        return {"error": str(error)}
    finally:
        tab.close()
    return {"first_load": first, "reruns": reruns_out}


def _exceptions_in(node: dict) -> int:
    return (node.get("type") == "exception") + sum(_exceptions_in(c) for c in node.get("children", []))


def headless_session(server, path, model, n_tokens, reruns, edit="start", params=None) -> list[dict]:
    """As many retypes with no browser on the machine (AgentSession): the server's time alone.
    Its texts start after the browser session's, so none of them is in a cache yet."""
    first = reruns + 1
    session = AgentSession(server, path, model=model, text=edited_text(n_tokens, 0, edit, first), **(params or {}))
    out = []
    for i in range(1, reruns + 1):
        wall = time.time()
        request_s = session.set_text(edited_text(n_tokens, i, edit, first))
        runs = server.runs(since=wall)
        out.append({"server_ms": 1000 * runs[-1]["exec_s"] if runs else None, "request_ms": 1000 * request_s,
                    "server_runs": len(runs)})
    tree = session.interact()["tree"]  # the last run's elements, as a browser would have drawn them
    if _exceptions_in(tree):
        raise RuntimeError(f"{path or 'Home'}: the page shows an exception to a session without a browser")
    return out


def _summary(reruns: list[dict]) -> dict:
    return {
        "server_ms_median": median([r["server_ms"] for r in reruns]),
        "server_cpu_ms_median": median([r["server_cpu_ms"] for r in reruns]),
        "server_gc_ms_max": max((r["server_gc_ms"] or 0 for r in reruns), default=None),
        "browser_ms_median": median([r["browser_ms"] for r in reruns]),
        "browser_first_token_ms_median": median([r["browser_first_token_ms"] for r in reruns]),  # None: not Generate
        "bytes_median": median([r["bytes"] for r in reruns]),
        "bytes_max": max((r["bytes"] for r in reruns), default=None),
        "exceptions": max((r["exceptions"] for r in reruns), default=0),
    }


# --- the commands ------------------------------------------------------------------------------


# Cold starts come in pairs: the first start on a fresh machine, which draws the model's initial
# weights and writes them to an empty init cache (gptviz.init_cache), then a restart that reads them.
STARTS = ("first", "restart")


def _wait_for_init_cache_writes(directory: Path, timeout_s: float = 60) -> None:
    """Until the server's background writes of initial weights (temporary files) are done."""
    deadline = time.perf_counter() + timeout_s
    while directory.is_dir() and any(directory.glob("*.tmp")) and time.perf_counter() < deadline:
        time.sleep(0.1)


def cmd_cold(args, pages) -> dict:
    """Fresh server per page: launch `streamlit run`, open the page, wait for its charts."""
    print("\nCold start: timer starts before `streamlit run`, stops when the page's charts are drawn;\n"
          "first = nothing on disk yet (initial weights drawn and written), restart = the same app started again")
    rows, checks = [], []
    with browser() as b, tempfile.TemporaryDirectory(prefix="gptviz-bench-init-") as scratch:
        warm = Tab(b)  # Chromium's own start-up is not the app's: do it before the timer
        warm.close()
        for model in args.models:
            for name, path in pages.items():
                for attempt, start in itertools.product(range(args.repeats), STARTS):
                    init_cache = Path(scratch) / f"{model}-{name}-{attempt}"
                    if start == "first":
                        shutil.rmtree(init_cache, ignore_errors=True)
                    tab = Tab(b)
                    with Server(env=SERVER_ENV, init_cache=init_cache) as server:
                        healthy_s = server.wait_healthy(60)
                        wall = time.time()
                        goto_s = time.perf_counter() - server.launched_at
                        tab.goto(server.page_url(path, model=model if model != "skeleton" else None), 180)
                        t = tab.wait_first_load(180)  # page clock: ms since this navigation started
                        total_s = time.perf_counter() - server.launched_at
                        runs = server.runs(since=wall)
                        mem = server.memory_mb()
                        exceptions = tab.exceptions()
                        _wait_for_init_cache_writes(init_cache)  # else the restart may find no file
                    tab.close()
                    row = {"page": name, "model": model, "start": start, "attempt": attempt, "total_s": total_s,
                           "server_healthy_s": healthy_s, "navigation_at_s": goto_s,
                           "script_started_after_navigation_s": t["started_ms"] / 1000,
                           "not_running_after_navigation_s": t["not_running_ms"] / 1000,
                           "drawn_after_navigation_s": t["drawn_ms"] / 1000,
                           "script_runs": len(runs), "script_run_s": [r["exec_s"] for r in runs],
                           "exceptions": exceptions, "peak_rss_mb": mem["peak_rss_mb"]}
                    rows.append(row)
                    print(f"  {name:12s} model={model:8s} {start:8s} #{attempt}: {total_s:5.2f} s = server healthy "
                          f"{healthy_s:.2f} s + browser to script start {t['started_ms'] / 1000:.2f} s + "
                          f"script {(t['not_running_ms'] - t['started_ms']) / 1000:.2f} s (server-side "
                          f"{', '.join(f'{r:.2f}' for r in row['script_run_s'])} s) + drawing "
                          f"{(t['drawn_ms'] - t['not_running_ms']) / 1000:.2f} s; peak RSS {mem['peak_rss_mb']:.0f} MB"
                          + (f"; EXCEPTIONS {exceptions}" if exceptions else ""))
    print("Budgets:")
    for start, model, name in itertools.product(STARTS, args.models, pages):
        value = median([r["total_s"] for r in rows if (r["page"], r["model"], r["start"]) == (name, model, start)])
        checks.append(verdict(f"cold start ({start}), {name} first, model={model}", value,
                              BUDGETS["cold_start_s"], "s"))
    return {"rows": rows, "checks": checks}


def cmd_warm(args, pages) -> dict:
    """One server, model cached; per page: open it, then retype the text `repeats` times."""
    n = args.tokens
    print(f"\nWarm rerun: model={args.model}, {n}-token texts, {args.repeats} retypes per page (model cached), "
          + ("the first word changed" if args.edit == "start" else "a word typed at the end") + " each time")
    rows, checks = [], []
    print("  server alone = as many retypes, of other texts, from a session with no browser (Streamlit's agent API);"
          "\n  server = the browser session's reruns, with Chromium drawing on the same 2 cores")
    with Server(env={**SERVER_ENV, **AGENT_API}) as server, browser() as b:
        server.wait_healthy(60)
        # Build the model once, outside the timings (a cold start is measured by `cold`).
        warm = Tab(b)
        open_page(server, warm, "", model=args.model)
        warm.close()
        for name, path in pages.items():
            out = page_session(server, b, path, args.model, n, args.repeats, args.edit, args.params)
            if "error" in out:
                rows.append({"page": name, "model": args.model, "tokens": n, **out})
                continue
            out["headless_reruns"] = headless_session(server, path, args.model, n, args.repeats, args.edit, args.params)
            s = _summary(out["reruns"])
            s["server_alone_ms_median"] = median([r["server_ms"] for r in out["headless_reruns"]])
            rows.append({"page": name, "model": args.model, "tokens": n, **out, "summary": s})
            first_token = s["browser_first_token_ms_median"]
            print(f"  {name:12s} server alone {s['server_alone_ms_median']:7.1f} ms   "
                  f"server {s['server_ms_median']:7.1f} ms (gc at most {s['server_gc_ms_max']:5.1f} ms)   "
                  f"browser {s['browser_ms_median']:7.1f} ms   "
                  + (f"(first token shown {first_token:.0f} ms)   " if first_token is not None else "")
                  + f"sent {s['bytes_median'] / 1024:7.1f} kB per rerun (first load {out['first_load']['bytes'] / 1024:.0f} kB)"
                  + (f"   EXCEPTIONS {s['exceptions']}" if s["exceptions"] else ""))
        mem = server.memory_mb()
    print(f"  (server peak RSS during the run: {mem['peak_rss_mb']:.0f} MB)")
    print("Budgets:")
    for row in rows:
        s = row.get("summary", {})
        checks.append(verdict(f"warm rerun server alone, {row['page']}", s.get("server_alone_ms_median"),
                              BUDGETS["warm_server_ms"], "ms"))
        checks.append(verdict(f"warm rerun server beside the browser, {row['page']}", s.get("server_ms_median"),
                              BUDGETS["warm_server_ms"], "ms"))
        checks.append(verdict(f"warm rerun browser, {row['page']}", s.get("browser_ms_median"), BUDGETS["warm_browser_ms"], "ms"))
    settings = {"model": args.model, "tokens": n, "repeats": args.repeats, "edit": args.edit, "params": args.params}
    return {"settings": settings, "rows": rows,
            "server_memory": mem, "checks": checks}


BYTES_CASES = [("default input, DummyGPTModel", "skeleton", 4), ("300 tokens, GPTModel", "gpt", 300)]


def cmd_bytes(args, pages) -> dict:
    """Websocket bytes the browser receives: first load and each rerun after retyping."""
    print("\nBytes sent to the browser (websocket frames received), per page")
    rows, checks = [], []
    with Server(env=SERVER_ENV) as server, browser() as b:
        server.wait_healthy(60)
        for case, model, n in BYTES_CASES:
            for name, path in pages.items():
                out = page_session(server, b, path, model, n, max(2, args.repeats // 2))
                if "error" in out:
                    rows.append({"page": name, "case": case, "model": model, "tokens": n, **out})
                    continue
                s = _summary(out["reruns"])
                rows.append({"page": name, "case": case, "model": model, "tokens": n, **out, "summary": s})
                print(f"  {case:30s} {name:12s} first load {out['first_load']['bytes'] / MB:6.3f} MB   "
                      f"rerun {s['bytes_max'] / MB:6.3f} MB   (server {s['server_ms_median']:.0f} ms, "
                      f"browser {s['browser_ms_median']:.0f} ms)"
                      + (f"   EXCEPTIONS {s['exceptions']}" if s["exceptions"] else ""))
    print("Budgets:")
    for row in rows:
        sent = row["summary"]["bytes_max"] / MB if "summary" in row else None
        checks.append(verdict(f"sent per rerun, {row['page']}, {row['case']}", sent, BUDGETS["rerun_sent_mb"], "MB"))
    return {"rows": rows, "checks": checks}


def cmd_memory(args, pages) -> dict:
    """Peak RSS per model over every page (default and 300-token input); then per-session cost."""
    print("\nServer memory (VmRSS / VmHWM of the server and its children)")
    models, checks = [], []
    budget = {"skeleton": BUDGETS["skeleton_peak_rss_mb"], "gpt": BUDGETS["gpt_peak_rss_mb"]}
    with browser() as b:
        for model in ("skeleton", "gpt"):
            with Server(env=SERVER_ENV) as server:
                server.wait_healthy(60)
                steps = [{"step": "idle", **server.memory_mb()}]
                tab = Tab(b)
                for n in (4, 300):
                    for name, path in pages.items():
                        open_page(server, tab, path, model=model, text=text_of(n, 0))
                        steps.append({"step": f"{name} {n} tokens", **server.memory_mb()})
                tab.close()
                time.sleep(1)
                steps.append({"step": "after closing the tab", **server.memory_mb()})
            peak = max(s["peak_rss_mb"] for s in steps)
            default_peak = max(s["peak_rss_mb"] for s in steps if "300" not in s["step"])
            models.append({"model": model, "steps": steps, "peak_rss_mb": peak, "peak_rss_default_input_mb": default_peak})
            print(f"  model={model:8s} idle {steps[0]['rss_mb']:.0f} MB; peak {default_peak:.0f} MB with the default "
                  f"input on every page, {peak:.0f} MB after 300-token inputs; now {steps[-1]['rss_mb']:.0f} MB")
            for s in steps[1:]:
                print(f"      {s['step']:28s} rss {s['rss_mb']:7.0f} MB   peak {s['peak_rss_mb']:7.0f} MB")
        switching = model_switch(b, pages)
        sessions = [session_cost(b, name, path, args) for name, path in pages.items() if name in args.session_pages]
    print("Budgets:")
    for m in models:
        checks.append(verdict(f"peak RSS, model={m['model']}, every page, default and 300-token input",
                              m["peak_rss_mb"], budget[m["model"]], "MB"))
    if switching:
        checks.append(verdict(f"peak RSS, one server, a class switching {' -> '.join(switching['models'])}",
                              switching["peak_rss_mb"], BUDGETS["gpt_peak_rss_mb"], "MB"))
    for s in sessions:
        checks.append(verdict(f"RSS per extra session, {s['page']} (model={args.model}, {args.tokens} tokens)",
                              s["per_session_mb"], BUDGETS["session_delta_mb"], "MB"))
    return {"models": models, "model_switch": switching, "sessions": sessions, "checks": checks}


SWITCH = [("skeleton", {}), ("gpt", {}), ("mix", {"parts": "attention"})]


def model_switch(b, pages) -> dict | None:
    """One server while the sidebar's Model goes skeleton -> gpt -> mix, as a teacher shows each.

    Each is a separate model; gptviz.ui.get_model keeps as many as fit in GPTVIZ_MODEL_CACHE_MB (default 700 MiB: one 124M GPTModel), evicting before it builds.
    """
    page = "Predictions" if "Predictions" in pages else next((n for n in pages if n != "Home"), None)
    if page is None:
        return None
    steps = []
    with Server(env=SERVER_ENV) as server:
        server.wait_healthy(60)
        tab = Tab(b)
        try:
            for model, extra in SWITCH:
                open_page(server, tab, pages[page], model=model, text=text_of(32, 0), **extra)
                steps.append({"model": model, **server.memory_mb()})
        finally:
            tab.close()
    peak = max(s["peak_rss_mb"] for s in steps)
    print(f"  one server, {page}, model switched " + " -> ".join(
        f"{s['model']} ({s['rss_mb']:.0f} MB)" for s in steps) + f": peak {peak:.0f} MB")
    return {"page": page, "models": [s["model"] for s in steps], "steps": steps, "peak_rss_mb": peak}


def session_cost(b, name, path, args) -> dict:
    """Open 1, then 5, then 10 sessions side by side on one page, each with its own text."""
    counts = sorted(set(args.sessions))
    tabs, points = [], []
    with Server(env=SERVER_ENV) as server:
        server.wait_healthy(60)
        try:
            for target in counts:
                while len(tabs) < target:
                    tab = Tab(b)
                    tabs.append(tab)
                    open_page(server, tab, path, model=args.model, text=text_of(args.tokens, len(tabs) + 100))
                time.sleep(1)
                points.append({"sessions": target, **server.memory_mb()})
        finally:
            for tab in tabs:
                tab.close()
    first, last = points[0], points[-1]
    per = (last["rss_mb"] - first["rss_mb"]) / max(1, last["sessions"] - first["sessions"])
    print(f"  sessions on {name:12s} " + "   ".join(f"N={p['sessions']}: {p['rss_mb']:.0f} MB" for p in points)
          + f"   -> {per:.1f} MB per extra session")
    return {"page": name, "model": args.model, "tokens": args.tokens, "points": points, "per_session_mb": per}


# `warm` also measures each page from a session without a browser (Streamlit's agent API).
AGENT_API = {"STREAMLIT_SERVER_ENABLE_AGENT_API": "true"}
SERVER_ENV: dict = {}  # --env KEY=VALUE: try a setting (e.g. OMP_NUM_THREADS=1) without editing the app

COMMANDS = {"cold": cmd_cold, "warm": cmd_warm, "bytes": cmd_bytes, "memory": cmd_memory}


def _deadline(minutes: float) -> None:
    def expire(signum, frame):
        raise TimeoutError(f"--max-minutes {minutes} reached")

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(int(minutes * 60))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=[*COMMANDS, "all"])
    parser.add_argument("--pages", help="comma-separated page names (default: every page)")
    parser.add_argument("--repeats", type=int, default=5, help="retypes per page (warm), cold starts per page (cold: 1)")
    parser.add_argument("--model", default="gpt", help="model for warm reruns and sessions: skeleton|gpt")
    parser.add_argument("--models", default="skeleton,gpt", help="models for cold starts")
    parser.add_argument("--tokens", type=int, default=32, help="input length for warm reruns and sessions")
    parser.add_argument("--edit", choices=["start", "end"], default="start",
                        help="warm: change the first word (default; nothing shared) or type a word at the end")
    parser.add_argument("--sessions", default="1,5,10")
    parser.add_argument("--session-pages", help="pages for the per-session cost (default: every page)")
    parser.add_argument("--max-minutes", type=float, default=30)
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for the server, e.g. OMP_NUM_THREADS=1 (repeatable)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="warm: a URL parameter for every page opened, e.g. gen_steps=10 (repeatable)")
    args = parser.parse_args(argv)
    args.params = dict(kv.split("=", 1) for kv in args.param)
    SERVER_ENV.update(kv.split("=", 1) for kv in args.env)
    pages = page_paths()
    if args.pages:
        wanted = args.pages.split(",")
        pages = {k: v for k, v in pages.items() if k in wanted}
    args.models = args.models.split(",")
    args.sessions = [int(s) for s in args.sessions.split(",")]
    args.session_pages = args.session_pages.split(",") if args.session_pages else list(pages)
    print(describe_machine(machine()))
    print("pages: " + ", ".join(pages) + (f"; server environment {SERVER_ENV}" if SERVER_ENV else ""))
    _deadline(args.max_minutes)
    commands = list(COMMANDS) if args.command == "all" else [args.command]
    failed = False
    for command in commands:
        cmd_args = argparse.Namespace(**vars(args))
        if command == "cold" and "--repeats" not in (argv or sys.argv):
            cmd_args.repeats = 1
        try:
            result = COMMANDS[command](cmd_args, pages)
        except TimeoutError as error:
            print(f"stopped: {error}")
            write_result(f"app_{command}", {"error": str(error), "pages": list(pages)})
            return 2
        suffix = "".join(f"_{k}={v}" for k, v in SERVER_ENV.items())
        write_result(f"app_{command}{suffix}", {"pages": list(pages), "server_env": SERVER_ENV, **result})
        failed |= any(c["status"] != "PASS" for c in result["checks"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
