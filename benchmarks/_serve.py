"""`streamlit run`, plus a log of how long each page script run takes on the server.

    .venv/bin/python benchmarks/_serve.py app.py --server.port 8650 ...   (same arguments as `streamlit run`)

With GPTVIZ_BENCH_RUNLOG=<path> set, every script run appends one JSON line to <path>:
wall-clock start, seconds (and process CPU seconds) spent executing the page script (widgets, cached loaders,
figure building and serialising, everything the script thread does for that run),
garbage-collector pauses in the server during the run, the session and the query string;
<path>.gc gets one line per collection of 1 ms or more (when it ended, how long, generation).
Nothing else changes: the app is served exactly as `streamlit run` serves it. The benchmarks
start the server through this file so the server-side time of a rerun comes from the real
server the browser talks to.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time


GC = {"pause_s": 0.0, "started": None, "log": None}  # garbage-collector pauses of the whole process


def _count_gc_pauses(phase: str, info: dict) -> None:
    # A collection stops every Python thread of the server (script, event loop, sending): a
    # full one walked ~270,000 objects in 190-320 ms before gptviz.ui froze the imports'
    # objects (gc.freeze). Pauses of 1 ms or more are also logged with their time, so a
    # rerun's pauses outside its script (while its messages are sent) are seen too.
    if phase == "start":
        GC["started"] = time.perf_counter()
    elif GC["started"] is not None:
        pause = time.perf_counter() - GC["started"]
        GC["pause_s"] += pause
        if pause >= 0.001:
            with open(GC["log"], "a") as f:
                f.write(json.dumps({"t": time.time(), "pause_s": pause, "generation": info["generation"]}) + "\n")


def _install_run_log(path: str) -> None:
    from streamlit.runtime.scriptrunner import script_runner

    GC["log"] = path + ".gc"
    gc.callbacks.append(_count_gc_pauses)

    original = script_runner.exec_func_with_error_handling
    lock = threading.Lock()

    def timed_exec(func, ctx, *args, **kwargs):
        wall, start, cpu, gc_s = time.time(), time.perf_counter(), time.process_time(), GC["pause_s"]
        try:
            return original(func, ctx, *args, **kwargs)
        finally:
            record = {
                "t": wall,
                "exec_s": time.perf_counter() - start,
                "process_cpu_s": time.process_time() - cpu,  # every thread of the server, torch's included
                "gc_pause_s": GC["pause_s"] - gc_s,  # collections anywhere in the server during the run
                "session": getattr(ctx, "session_id", None),
                "page_hash": getattr(ctx, "page_script_hash", None),
                "query": getattr(ctx, "query_string", None),
            }
            with lock, open(path, "a") as f:
                f.write(json.dumps(record) + "\n")

    script_runner.exec_func_with_error_handling = timed_exec


def main() -> None:
    log_path = os.environ.get("GPTVIZ_BENCH_RUNLOG")
    if log_path:
        _install_run_log(log_path)
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", *sys.argv[1:]]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
