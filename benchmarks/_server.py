"""Starting the app and a browser for the benchmarks, and measuring them from outside.

- `Server`: `streamlit run app.py` (through _serve.py, which logs each script run's time)
  on a port in 8650-8659, in its own process group, always stopped on exit; its RSS read
  from /proc (VmRSS and VmHWM, children included).
- `browser()`: Debian's Chromium through Playwright (`executable_path`: Playwright never
  downloads a browser here).
- `Tab`: one browser page on the app that records script-state changes and websocket
  bytes received, and knows when a run is over and its charts are drawn.
- `AgentSession`: a session with no browser at all, through Streamlit's agent API, so the
  server's time can be measured without a browser drawing on the same cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from _report import MB, ROOT

sys.path.insert(0, str(ROOT / "tests"))
import browser as tb  # noqa: E402  the browser tests' helpers: page discovery, Chromium, selectors

PORTS = range(8650, 8660)
# The tests' flags, plus: background tabs keep rendering (sessions are opened side by side).
CHROMIUM_ARGS = [*tb.CHROMIUM_ARGS, "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                 "--disable-backgrounding-occluded-windows"]
VIEWPORT = tb.VIEWPORT


def free_port(ports: range = PORTS) -> int:
    """The first port of `ports` nothing listens on (each script has its own range, so they can run at once).

    SO_REUSEADDR as the server's own listener (tornado) sets it: a port whose last connections are
    in TIME_WAIT is free for it (without, `cold`'s 28 servers in a few minutes ran out of ports)."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")


def page_paths() -> dict:
    """URL path of each page that exists now, named as Streamlit names it: {"Home": "", "Tokens": "Tokens", ...}."""
    return {p.name: p.url_path.lstrip("/") for p in tb.discover_pages(ROOT)}


def _descendants(pid: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """The app on a free port, through _serve.py; a context manager that always kills it."""

    def __init__(self, env: dict | None = None, port: int | None = None, init_cache: Path | None = None):
        """`init_cache`: the directory of kept initial weights (gptviz.init_cache); by default an empty
        one of this server's own, so it builds its models as on a fresh machine."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_dir = tempfile.TemporaryDirectory(prefix="gptviz-bench-")
        self.init_cache = init_cache or Path(self._log_dir.name) / "init-cache"
        self.run_log = Path(self._log_dir.name) / "runs.jsonl"
        self.stdout = Path(self._log_dir.name) / "server.log"
        self.extra_env = env or {}
        self.proc: subprocess.Popen | None = None
        self.launched_at: float | None = None

    def start(self) -> "Server":
        env = {**os.environ, "GPTVIZ_INIT_CACHE_DIR": str(self.init_cache), **self.extra_env,
               "GPTVIZ_BENCH_RUNLOG": str(self.run_log),
               "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
        cmd = [
            sys.executable, str(ROOT / "benchmarks" / "_serve.py"), "app.py",
            "--server.headless", "true", "--server.port", str(self.port), "--server.address", "127.0.0.1",
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
        ]
        self.launched_at = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=open(self.stdout, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def wait_healthy(self, timeout: float = 60) -> float:
        """Seconds from launch until /_stcore/health answers ok."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.stdout.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.launched_at
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"server not healthy after {timeout} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self._log_dir.cleanup()

    def memory_mb(self) -> dict:
        """RSS now and its peak (VmHWM) of the server and its children, in MB."""
        pids = _descendants(self.proc.pid)
        rss = sum(_status_kb(p, "VmRSS") for p in pids) / 1024
        hwm = sum(_status_kb(p, "VmHWM") for p in pids) / 1024
        return {"rss_mb": rss, "peak_rss_mb": hwm, "processes": len(pids)}

    def runs(self, since: float = 0.0) -> list[dict]:
        """Script runs logged since the wall-clock time `since`."""
        if not self.run_log.exists():
            return []
        rows = [json.loads(line) for line in self.run_log.read_text().splitlines() if line.strip()]
        return [r for r in rows if r["t"] >= since]

    def gc_pauses_s(self, since: float, until: float | None = None) -> float:
        """Seconds the server spent in garbage collections of 1 ms or more that ended in [since, until]."""
        path = Path(str(self.run_log) + ".gc")
        if not path.exists():
            return 0.0
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return sum(r["pause_s"] for r in rows if since <= r["t"] <= (until or time.time()))

    def page_url(self, path: str, **params) -> str:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        return f"{self.url}/{path}" + (f"?{query}" if query else "")


@contextlib.contextmanager
def browser(timeout_s: float = 60):
    """A headless Chromium (Debian's) for the duration of the block."""
    from playwright.sync_api import sync_playwright

    path = tb.chromium_path()
    if path is None:
        raise RuntimeError("Chromium is missing (apt-get install chromium); Playwright must not download one")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True, timeout=timeout_s * 1000)
        try:
            yield b
        finally:
            b.close()


# Records each change of the app's script state with its time, from before the app loads.
_STATE_OBSERVER = """
(() => {
  window.__states = [];
  const seen = new WeakMap();
  const record = (el) => {
    const s = el.getAttribute('data-test-script-state');
    if (s && seen.get(el) !== s) { seen.set(el, s); window.__states.push([performance.now(), s]); }
  };
  new MutationObserver((ms) => { for (const m of ms) {
      if (m.type === 'attributes') record(m.target);
      else for (const n of m.addedNodes) if (n.querySelectorAll) {
        if (n.matches && n.matches('[data-testid=stApp]')) record(n);
        n.querySelectorAll('[data-testid=stApp]').forEach(record);
      } } })
    .observe(document, {subtree: true, childList: true, attributes: true,
                        attributeFilter: ['data-test-script-state']});
})();
"""

# True once every chart on the page is drawn: plotly SVGs, graphviz SVGs, dataframe canvases,
# nothing is marked stale (left over from the previous run), and no element is still a skeleton:
# Streamlit loads each kind of element's code on first use and draws a skeleton meanwhile, and
# `every` of no charts is true (until 2026-12-02 this missed it, so first loads read ~1 s early).
_DRAWN = f"""
() => {{
  const app = document.querySelector('[data-testid=stApp]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-stale=true]') || document.querySelector('{tb.SKELETON}')) return false;
  const all = (sel, inner) => [...document.querySelectorAll(sel)].every(e => e.querySelector(inner));
  if (!all('{tb.PLOTLY}', 'svg.main-svg')) return false;
  if (!all('{tb.GRAPHVIZ}', 'svg')) return false;
  if (!all('[data-testid=stDataFrame]', 'canvas')) return false;
  return performance.now();
}}
"""


class Tab:
    """One browser page in its own context (its own Streamlit session): script states,
    websocket bytes, chart readiness."""

    def __init__(self, b):
        self.context = b.new_context(viewport=VIEWPORT)
        self.page = self.context.new_page()
        self.page.add_init_script(_STATE_OBSERVER)
        self.page.add_init_script(tb.GENERATED_OBSERVER)  # when the Generate page shows its first token
        self.frames: list[tuple[float, float, int]] = []  # (perf_counter, wall clock, bytes) of each frame received
        self.page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws) -> None:
        ws.on("framereceived", lambda payload: self.frames.append((time.perf_counter(), time.time(), len(payload))))

    def goto(self, url: str, timeout_s: float = 120) -> None:
        self.page.goto(url, timeout=timeout_s * 1000, wait_until="domcontentloaded")

    def now(self) -> float:
        return self.page.evaluate("performance.now()")

    def wait_run_done(self, since_ms: float, timeout_s: float = 120, server: "Server | None" = None,
                      since_wall: float | None = None) -> dict:
        """Wait for a run that started after `since_ms` (page clock) to finish and its charts to be drawn.

        A run is seen either by the app painting "running" then "notRunning", or, for a run so
        short that React never paints "running", by the server's run log (`server`, runs since
        `since_wall`) plus a websocket frame received after that run ended. Returns page-clock
        times (ms): run start and notRunning (None when "running" was never painted) and when
        every chart was drawn.
        """
        deadline = time.perf_counter() + timeout_s
        observed = None
        while observed is None:
            states = [x for x in self.page.evaluate("window.__states") if x[0] >= since_ms]
            start = next((t for t, st in states if st == "running"), None)
            if start is not None:
                end = next((t for t, st in states if st == "notRunning" and t >= start), None)
                if end is not None:
                    observed = (start, end)
                    break
            if server is not None and since_wall is not None:
                runs = server.runs(since=since_wall)
                if runs and any(w >= runs[-1]["t"] + runs[-1]["exec_s"] for _, w, _ in self.frames):
                    observed = (None, None)
                    break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no finished run after {timeout_s} s")
            time.sleep(0.01)
        drawn = self.page.wait_for_function(_DRAWN, timeout=timeout_s * 1000, polling="raf").json_value()
        return {"started_ms": observed[0], "not_running_ms": observed[1], "drawn_ms": drawn}

    def wait_first_load(self, timeout_s: float = 120, server: "Server | None" = None,
                        since_wall: float | None = None) -> dict:
        return self.wait_run_done(0.0, timeout_s, server, since_wall)

    def first_token_ms(self, since_ms: float) -> float | None:
        """Page-clock time when the Generate page first showed a generated token after
        `since_ms` (its token rows are redrawn as each step comes), or None on other pages."""
        rows = self.page.evaluate("window.__generated")
        return next((t for t, n in rows if t >= since_ms and n), None)

    def bytes_since(self, t0: float) -> int:
        return sum(n for t, _, n in self.frames if t >= t0)

    def set_text(self, text: str) -> None:
        """Type a new input text in the sidebar and commit it (Ctrl+Enter), as a user does."""
        box = self.page.locator(tb.TEXT_AREA)
        box.fill(text, timeout=120_000)
        box.press("Control+Enter")

    def screenshot(self, name: str) -> Path:
        """A PNG in artifacts/bench/, to see what the page showed when a step failed."""
        path = ROOT / "artifacts" / "bench" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(path), timeout=20_000)
        return path

    def exceptions(self) -> int:
        return self.page.locator("[data-testid=stException]").count()

    def close(self) -> None:
        self.context.close()


class AgentSession:
    """One app session driven without a browser: Streamlit's agent API (`POST /_stcore/agent/interact`,
    on when the server runs with STREAMLIT_SERVER_ENABLE_AGENT_API=true). It is an ordinary AppSession whose
    client collects the ForwardMsgs instead of a websocket; widget values go through the same
    `rerun_script` path as a browser's, and each request returns once the run has settled."""

    def __init__(self, server: Server, path: str, timeout_s: float = 180, **params):
        self.server = server
        self.timeout_s = timeout_s
        self.session_id = None  # the first request creates the session
        query = {k: [str(v)] for k, v in params.items() if v is not None}
        self.session_id = self.interact(page=path, query_params=query)["session_id"]

    def interact(self, **request) -> dict:
        if self.session_id:
            request = {"session_id": self.session_id, **request}
        req = urllib.request.Request(
            f"{self.server.url}/_stcore/agent/interact", data=json.dumps(request).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"agent API {error.code}: {error.read().decode()[:500]}") from error
        if answer.get("status") != "ready":
            raise RuntimeError(f"agent session not ready: {answer.get('status')!r}")
        return answer

    def set_text(self, text: str) -> float:
        """Set the text input (key "text") and wait for the rerun; seconds the request took."""
        start = time.perf_counter()
        self.interact(widget_state={"text": text})
        return time.perf_counter() - start
