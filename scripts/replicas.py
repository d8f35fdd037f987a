"""Scale-out check: N Streamlit replicas behind nginx (deploy/nginx.conf), driven by real browsers.

    .venv/bin/python scripts/replicas.py                 # 2 replicas, checks, cleanup; exit 0 when all pass
    .venv/bin/python scripts/replicas.py --install       # apt-get install nginx first if missing (root)
    .venv/bin/python scripts/replicas.py --keep-running  # leave it up for a look (Ctrl+C ends it)

What it does, on loopback ports 8680-8689 only:
1. starts N replicas (`streamlit run app.py`, each in its own process group) and waits for each
   /_stcore/health;
2. fills deploy/nginx.conf's placeholders into a temporary prefix and runs Debian's nginx in the
   foreground (`nginx -p <prefix> -c <conf> -g 'daemon off;'`; no system service);
3. checks /_stcore/health through nginx;
4. opens browser sessions through nginx, each in its own Playwright context (own cookies, own
   websocket), until both replicas have some (at least --sessions, at most 12); every page must
   draw with no traceback, and a retyped text must rerun;
5. reads nginx's access log (upstream= and route= on every line): each session's requests, its
   websocket included, all went to one replica, and the sessions are spread over the replicas;
6. kills one replica: health through nginx still answers, and new sessions still open and work
   (nginx's passive failover); an open session of the dead replica reconnects to a live one.

Screenshots, the access log and a JSON summary go to artifacts/replicas/. Everything started is
stopped at the end, also on errors, Ctrl+C, SIGTERM or the --max-seconds bound.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import browser as b  # noqa: E402  the browser tests' server-less helpers: Chromium, selectors, page reading

PORTS = range(8680, 8690)
TEMPLATE = ROOT / "deploy" / "nginx.conf"
OUT = ROOT / "artifacts" / "replicas"
ROUTE_COOKIE = "gptviz_route"
TINY = quote("tiny (teaching)")
# Pages the sessions open, with the tiny model so a session costs little; the last one is the default 124M skeleton.
LINKS = [
    f"/?model=gpt&preset={TINY}",
    f"/Tokens?text=Replicas%20share%20nothing&preset={TINY}",
    f"/Attention?model=gpt&preset={TINY}&layer=1&head=2",
    f"/Predictions?model=gpt&preset={TINY}&seed=7",
    f"/Embeddings?model=skeleton&preset={TINY}",
    f"/Model?model=mix&parts=attention&preset={TINY}",
]
LOG_LINE = re.compile(r'"(?P<method>\S+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) upstream=(?P<upstream>.*?) route=(?P<route>\S+)')


class CheckFailed(AssertionError):
    pass


def find_nginx() -> str | None:
    """Debian's nginx: on PATH, or in /usr/sbin (not on a normal user's PATH)."""
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def install_nginx() -> str | None:
    if os.geteuid() != 0:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=False, env=env, timeout=600,
                   stdout=subprocess.DEVNULL)
    return find_nginx()


def free_ports(n: int) -> list[int]:
    found = []
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise RuntimeError(f"need {n} free ports in {PORTS.start}-{PORTS.stop - 1}, found {found}")


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    """(status, body); a body cut short (nginx closes after refusing a huge request) is empty."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        try:
            body = e.read().decode(errors="replace")
        except (http.client.HTTPException, OSError):
            body = ""
        return e.code, body


def wait_healthy(url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before {url} was healthy\n{tail}")
        with contextlib.suppress(OSError):
            status, body = http_get(url, timeout=2)
            if status == 200 and body.strip() == "ok":
                return
        time.sleep(0.2)  # polling a server that has no way to signal readiness
    raise RuntimeError(f"{url} not healthy within {timeout:.0f} s")


def stop_group(proc: subprocess.Popen | None, first=signal.SIGTERM) -> None:
    """Stop a process started in its own session, and everything it started."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((first, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def render_conf(template: str, values: dict) -> str:
    """deploy/nginx.conf with its placeholders filled in (comments, which name them, are left alone)."""
    lines = []
    for line in template.splitlines():
        if not line.lstrip().startswith("#"):
            for placeholder, value in values.items():
                line = line.replace(placeholder, value)
        lines.append(line)
    text = "\n".join(lines) + "\n"
    left = [p for p in values if p in "\n".join(l for l in lines if not l.lstrip().startswith("#"))]
    if left:
        raise CheckFailed(f"placeholders left in the config: {left}")
    return text


@dataclass
class Cluster:
    nginx_bin: str
    replicas: int = 2
    prefix: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gptviz-nginx-")))
    procs: dict = field(default_factory=dict)  # "127.0.0.1:port" -> Popen
    nginx: subprocess.Popen | None = None
    url: str = ""

    def start(self, timeout: float = 120) -> None:
        # Started as root, nginx's workers run as nobody: they must reach the temp directories.
        os.chmod(self.prefix, 0o755)
        nginx_port, *ports = free_ports(self.replicas + 1)
        for port in ports:
            log = self.prefix / f"replica-{port}.log"
            cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                   "--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none",
                   "--browser.gatherUsageStats", "false", "--logger.enableRich", "false"]
            with open(log, "wb") as out:
                self.procs[f"127.0.0.1:{port}"] = subprocess.Popen(
                    cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True)
        for addr, proc in self.procs.items():
            wait_healthy(f"http://{addr}/_stcore/health", timeout, proc, self.prefix / f"replica-{addr.split(':')[1]}.log")
        conf = self.prefix / "nginx.conf"
        upstreams = "\n".join(f"        server {addr} max_fails=1 fail_timeout=10s;" for addr in self.procs)
        conf.write_text(render_conf(TEMPLATE.read_text(), {
            "__LISTEN__": f"127.0.0.1:{nginx_port}", "__PREFIX__": str(self.prefix), "__UPSTREAMS__": upstreams}))
        base = [self.nginx_bin, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log")]
        test = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
        if test.returncode != 0:
            raise CheckFailed(f"nginx -t rejected the generated config:\n{test.stderr}\n--- config ---\n{conf.read_text()}")
        self.nginx = subprocess.Popen([*base, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                      stderr=open(self.prefix / "nginx.stderr", "wb"), start_new_session=True)
        self.url = f"http://127.0.0.1:{nginx_port}"
        wait_healthy(f"{self.url}/_stcore/health", 30, self.nginx, self.prefix / "nginx.stderr")

    def kill_replica(self, addr: str) -> None:
        stop_group(self.procs[addr], signal.SIGKILL)

    def access_log(self) -> list[dict]:
        path = self.prefix / "access.log"
        if not path.exists():
            return []
        return [m.groupdict() for line in path.read_text().splitlines() if (m := LOG_LINE.search(line))]

    def stop(self) -> None:
        stop_group(self.nginx, signal.SIGQUIT)  # graceful: finishes writing the access log
        for proc in self.procs.values():
            stop_group(proc)
        OUT.mkdir(parents=True, exist_ok=True)
        for name in ("access.log", "error.log", "nginx.conf"):
            with contextlib.suppress(OSError):
                shutil.copy(self.prefix / name, OUT / name)
        shutil.rmtree(self.prefix, ignore_errors=True)


# --- browser sessions -------------------------------------------------------------------------------


@dataclass
class Session:
    name: str
    context: object
    page: object
    route: str = ""
    problems: list = field(default_factory=list)


def open_session(browser, url: str, name: str, link: str) -> Session:
    context = b.new_context(browser, url)
    page = b.new_tab(context)
    session = Session(name, context, page)
    view = b.open_page(page, link)
    session.problems += view.problems()
    if "gptviz" not in (page.title() or "") and not view.main_text.strip():
        session.problems.append("the page drew nothing")
    session.route = next((c["value"] for c in context.cookies() if c["name"] == ROUTE_COOKIE), "")
    if not session.route:
        session.problems.append(f"no {ROUTE_COOKIE} cookie was set")
    return session


def shot(page, name: str) -> Path:
    """A full-length screenshot (the browser tests' helper) moved to artifacts/replicas/."""
    path = b.screenshot(page, f"replicas-{name}")
    target = OUT / f"{name}.png"
    shutil.move(path, target)
    return target


def retype(session: Session, text: str) -> None:
    view = b.enter_text(session.page, text)
    session.problems += [f"after retyping: {p}" for p in view.problems()]


def upstreams_by_route(lines: list[dict]) -> dict[str, list[dict]]:
    by_route = defaultdict(list)
    for line in lines:
        by_route[line["route"]].append(line)
    return by_route


def wait_for_log(cluster, routes: list[str], timeout: float = 20) -> dict[str, list[dict]]:
    """The access log by route, once every route's websocket (/_stcore/stream) is in it (or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = upstreams_by_route(cluster.access_log())
        if all(any(x["path"].startswith("/_stcore/stream") for x in lines.get(r, [])) for r in routes):
            return lines
        if time.monotonic() > deadline:
            return lines
        time.sleep(0.2)  # nginx writes the line when the connection ends; nothing to wait on but the file


def final_upstream(line: dict) -> str:
    """nginx lists every replica it tried ("a:1, b:2" or "a:1 : b:2"); the last one answered."""
    return re.split(r"[,:]\s", line["upstream"])[-1].strip()


# --- the checks -------------------------------------------------------------------------------------


def run_checks(cluster: Cluster, args) -> dict:
    from playwright.sync_api import sync_playwright

    report: dict = {"replicas": list(cluster.procs), "nginx": cluster.url, "checks": {}}
    checks = report["checks"]

    started = time.monotonic()

    def check(name: str, ok: bool, detail) -> None:
        checks[name] = {"ok": bool(ok), "detail": detail, "at_s": round(time.monotonic() - started, 1)}
        print(f"  [{'PASS' if ok else 'FAIL'}] {time.monotonic() - started:5.0f} s  {name}: {detail if isinstance(detail, str) else json.dumps(detail)[:400]}")

    status, body = http_get(f"{cluster.url}/_stcore/health")
    check("health through nginx", status == 200 and body.strip() == "ok", f"{status} {body.strip()!r}")

    # Links carry the text. nginx's default 8 KB request line would answer a shared link with
    # 1,000 CJK characters "414"; here 3,300 (30 KB percent-encoded) must pass. (A replica itself
    # starts answering 400 somewhere between 64 and 128 KB of URL, depending on how the request
    # arrives.) A 1 MB link gets a clear 4xx, never a 5xx.
    long_link = f"{cluster.url}/Tokens?text={quote('丂' * 3_300)}"
    huge_link = f"{cluster.url}/?text={'x' * 1_000_000}"
    statuses = {"30 KB": http_get(long_link, timeout=30)[0], "1 MB": http_get(huge_link, timeout=30)[0]}
    check("long links through nginx", statuses["30 KB"] == 200 and 400 <= statuses["1 MB"] < 500,
          {k: f"HTTP {v}" for k, v in statuses.items()})

    path = b.chromium_path()
    if path is None:
        raise CheckFailed("Chromium is missing (apt-get install chromium); Playwright must not download a browser")
    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = b.launch_chromium(p, path)
        try:
            sessions: list[Session] = []
            # Open sessions until both replicas have some: routes are random, so stop early when they do.
            route_to_upstream: dict[str, str] = {}
            while len(sessions) < 12:
                i = len(sessions)
                sessions.append(open_session(browser, cluster.url, f"s{i}", LINKS[i % len(LINKS)]))
                lines = upstreams_by_route(cluster.access_log())
                for s in sessions:
                    if s.route in lines:
                        route_to_upstream[s.route] = final_upstream(lines[s.route][0])
                if len(sessions) >= args.sessions and len(set(route_to_upstream.values())) >= min(2, cluster.replicas):
                    break
            for s in sessions[:2]:
                shot(s.page, f"{s.name}-through-nginx")
            for s in sessions:
                retype(s, f"Session {s.name} types a new text")
            check("sessions through nginx draw every page without a traceback",
                  all(not s.problems for s in sessions),
                  {s.name: s.problems for s in sessions if s.problems} or f"{len(sessions)} sessions, no problems")

            # One session of the replica that will die stays open, to see it reconnect.
            victim = sessions[0].route and route_to_upstream.get(sessions[0].route)
            survivor_session = sessions[0]
            for s in sessions[1:]:
                s.context.close()  # closing ends its websocket, which nginx logs now

            # nginx logs a websocket when it closes, a moment after the browser let go of it.
            lines = wait_for_log(cluster, [s.route for s in sessions[1:]])
            per_session = {}
            for s in sessions[1:]:
                ups = sorted({final_upstream(line) for line in lines.get(s.route, [])})
                ws = [line for line in lines.get(s.route, []) if line["path"].startswith("/_stcore/stream")]
                per_session[s.name] = {"route": s.route[:12], "upstreams": ups, "requests": len(lines.get(s.route, [])),
                                       "websockets": [f"{w['status']} via {final_upstream(w)}" for w in ws]}
            sticky = all(len(v["upstreams"]) == 1 and v["websockets"] and all(w.endswith(v["upstreams"][0]) for w in v["websockets"])
                         for v in per_session.values())
            check("each session sticks to one replica (pages, assets and its websocket)", sticky, per_session)
            used = sorted({u for v in per_session.values() for u in v["upstreams"]} | {route_to_upstream.get(sessions[0].route, "")} - {""})
            check("sessions are spread over the replicas", len(used) >= min(2, cluster.replicas),
                  f"{len(sessions)} sessions used {used}")

            # Failover: kill the replica of the session still open.
            victim = victim or next(iter(cluster.procs))
            alive = [a for a in cluster.procs if a != victim]
            cluster.kill_replica(victim)
            report["killed"] = victim
            status, body = http_get(f"{cluster.url}/_stcore/health")
            check(f"health through nginx with {victim} killed", status == 200 and body.strip() == "ok",
                  f"{status} {body.strip()!r}")
            after = []
            for i in range(args.failover_sessions):
                s = open_session(browser, cluster.url, f"f{i}", LINKS[(i + 2) % len(LINKS)])
                retype(s, f"After the failover, session {i} still works")
                after.append(s)
            for s in after[:1]:
                shot(s.page, f"{s.name}-after-failover")
            for s in after:
                s.context.close()
            lines = wait_for_log(cluster, [s.route for s in after])
            landed = {s.name: sorted({final_upstream(line) for line in lines.get(s.route, [])}) for s in after}
            check("new sessions work with one replica dead (passive failover)",
                  all(not s.problems for s in after) and all(set(v) <= set(alive) and v for v in landed.values()),
                  {"problems": {s.name: s.problems for s in after if s.problems}, "replicas used": landed})

            # The session whose replica died: its websocket dropped; the browser reconnects through
            # nginx to a live replica, which starts a new session from the URL.
            survivor_session.problems = []
            try:
                retype(survivor_session, "The replica of this session died")
                recovered = not survivor_session.problems
                detail = survivor_session.problems or "reran on a live replica"
            except Exception as error:  # a reconnect that never happens times out here
                recovered, detail = False, f"{type(error).__name__}: {str(error)[:300]}"
            shot(survivor_session.page, "s0-after-its-replica-died")
            check("an open session of the dead replica reconnects and keeps working", recovered, detail)
            survivor_session.context.close()
        finally:
            browser.close()
    report["ok"] = all(c["ok"] for c in checks.values())
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=4, help="at least this many sessions (more until both replicas are used)")
    parser.add_argument("--failover-sessions", type=int, default=2)
    parser.add_argument("--install", action="store_true", help="apt-get install nginx if it is missing (root only)")
    parser.add_argument("--max-seconds", type=int, default=420, help="hard bound on the whole run")
    parser.add_argument("--keep-running", action="store_true")
    parser.add_argument("--json", type=Path, default=OUT / "result.json")
    args = parser.parse_args(argv)

    nginx_bin = find_nginx() or (install_nginx() if args.install else None)
    if nginx_bin is None:
        print("nginx is missing: apt-get install nginx (or run with --install as root)", file=sys.stderr)
        return 2

    def bail(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, bail)
    signal.signal(signal.SIGALRM, bail)
    signal.alarm(args.max_seconds)
    cluster = Cluster(nginx_bin, args.replicas)
    report: dict = {"ok": False}
    try:
        print(f"starting {args.replicas} replicas and nginx ({nginx_bin}) ...")
        t0 = time.monotonic()
        cluster.start()
        print(f"up in {time.monotonic() - t0:.0f} s: nginx {cluster.url} -> {', '.join(cluster.procs)}")
        report = run_checks(cluster, args)
        if args.keep_running:
            signal.alarm(0)
            print(f"running at {cluster.url}; Ctrl+C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    except BaseException as error:
        report = {**report, "ok": False, "error": f"{type(error).__name__}: {error}"}
        print(f"error: {report['error']}", file=sys.stderr)
    finally:
        signal.alarm(0)
        cluster.stop()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"{'ALL CHECKS PASSED' if report.get('ok') else 'FAILED'}; wrote {args.json}")
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
