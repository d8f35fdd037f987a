"""Where a page's warm rerun spends its time: cProfile of one rerun after a text change.

    .venv/bin/python benchmarks/profile_page.py Predictions [--model gpt] [--tokens 32] [--top 25]

Runs the page headlessly with streamlit's AppTest (the model is built and cached by a
first run, outside the profile), changes the input text as a user would, and profiles
that rerun: the page script, cached loaders (a trace-cache miss, since the text is new),
chart building and serialising. With --cpu: one torch thread, and the profile counts CPU time of the script thread, so
a busy machine does not inflate it. Prints the functions with the most cumulative time and
writes the full profile to artifacts/bench/profile_<page>.prof (open with snakeviz or pstats).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

from _report import OUT_DIR, ROOT, describe_machine, machine
from bench_app import text_of

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from apptest_helpers import run_page  # noqa: E402
from streamlit.runtime.scriptrunner import script_runner  # noqa: E402

PROFILE = {"active": None, "cpu_s": []}  # the cProfile.Profile for the next run; CPU seconds of each run


def _profile_script_thread() -> None:
    """The page script runs in its own thread: profile it there, around the script's execution."""
    original = script_runner.exec_func_with_error_handling

    def profiled(func, ctx, *args, **kwargs):
        profile = PROFILE["active"]
        start = time.thread_time()
        if profile is not None:
            profile.enable()
        try:
            return original(func, ctx, *args, **kwargs)
        finally:
            if profile is not None:
                profile.disable()
            PROFILE["cpu_s"].append(time.thread_time() - start)

    script_runner.exec_func_with_error_handling = profiled


def page_file(name: str) -> str | None:
    if name == "Home":
        return None
    matches = sorted(p for p in (ROOT / "pages").glob("*.py") if p.stem.split("_", 1)[-1] == name)
    if not matches:
        raise SystemExit(f"no page named {name} in pages/")
    return str(matches[0].relative_to(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page")
    parser.add_argument("--model", default="gpt")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--reruns", type=int, default=3, help="timed reruns (the first is profiled)")
    parser.add_argument("--cpu", action="store_true",
                        help="one torch thread and CPU time of the script thread (time.thread_time): a breakdown "
                             "that other load on the machine does not inflate")
    args = parser.parse_args(argv)
    if args.cpu:
        import torch

        torch.set_num_threads(1)  # torch then computes in the script thread, where thread_time sees it
    print(describe_machine(machine()))
    _profile_script_thread()
    at = run_page(page_file(args.page), model=args.model, text=text_of(args.tokens, 0))
    assert not at.exception, [e.value for e in at.exception]
    times, cpu = [], []
    profile = cProfile.Profile(time.thread_time) if args.cpu else cProfile.Profile()
    for i in range(1, args.reruns + 1):
        at.text_area(key="text").set_value(text_of(args.tokens, 200 + i))
        PROFILE["active"] = profile if i == 1 else None
        start = time.perf_counter()
        at.run()
        PROFILE["active"] = None
        times.append(time.perf_counter() - start)
        cpu.append(PROFILE["cpu_s"][-1])
        assert not at.exception, [e.value for e in at.exception]
    print(f"{args.page}, model={args.model}, {args.tokens} tokens: AppTest rerun after a text change "
          + ", ".join(f"{1000 * t:.0f} ms" for t in times) + " wall (the first one under the profiler"
          + (", whose times below are CPU seconds of the script thread, 1 torch thread)" if args.cpu else ")"))
    print("CPU time of the script thread per rerun: " + ", ".join(f"{1000 * c:.0f} ms" for c in cpu)
          + (" (with 1 torch thread this is all the work the rerun did)" if args.cpu else
             " (torch's other threads not included)"))
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"profile_{args.page}.prof"
    profile.dump_stats(path)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(args.top)
    print(out.getvalue())
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
