"""Scale-out: two replicas behind nginx (deploy/nginx.conf), through scripts/replicas.py.

The script starts the replicas and Debian's nginx on loopback ports, drives Chromium sessions
through nginx and checks health, rendering, sticky routing (websocket included), the spread over
replicas and failover when one replica is killed. Here it runs as a subprocess, bounded in time;
a missing nginx fails the test with the command that installs it (scripts/test.sh does, as root).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest

from apptest_helpers import ROOT

SCRIPT = ROOT / "scripts" / "replicas.py"
TIMEOUT = 480  # s for the whole run on a loaded 2-core machine (about 2.5 min when busy, under 1.5 idle)


def load_script():
    spec = importlib.util.spec_from_file_location("replicas", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_config_template_placeholders_are_all_filled():
    replicas = load_script()
    template = (ROOT / "deploy" / "nginx.conf").read_text()
    values = {"__LISTEN__": "127.0.0.1:8680", "__PREFIX__": "/tmp/p", "__UPSTREAMS__": "        server 127.0.0.1:8681;"}
    rendered = replicas.render_conf(template, values)
    code = "\n".join(line for line in rendered.splitlines() if not line.lstrip().startswith("#"))
    assert not any(p in code for p in values)
    assert "listen 127.0.0.1:8680;" in code and "server 127.0.0.1:8681;" in code
    assert code.index("log_format combined_upstream") < code.index("access_log"), "nginx needs the format first"
    assert "hash $gptviz_route consistent;" in code


@pytest.mark.browser
def test_two_replicas_behind_nginx_share_the_load_and_survive_a_crash(tmp_path):
    replicas = load_script()
    if replicas.find_nginx() is None:
        pytest.fail(
            "nginx is missing: this test runs two replicas behind Debian's nginx. Install it with "
            "`apt-get install -y nginx` (scripts/test.sh does when run as root); nothing runs as a service. "
            "To skip browser tests on a local machine only, set GPTVIZ_SKIP_BROWSER=1.",
            pytrace=False,
        )
    result_path = tmp_path / "result.json"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--json", str(result_path), "--max-seconds", str(TIMEOUT - 30)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the script stops nginx and the replicas on SIGTERM
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"scripts/replicas.py did not finish within {TIMEOUT} s:\n{output[-4000:]}", pytrace=False)
    assert result_path.exists(), f"scripts/replicas.py wrote no result (exit {proc.returncode}):\n{output[-4000:]}"
    result = json.loads(result_path.read_text())
    # Known limit, reported but not required: links of 180 kB to 1 MB (a 20,000-character text) are
    # refused with 400/414 on the way in; the app itself caps text at 20,000 characters.
    known = {"long links through nginx"}
    failed = {name: check["detail"] for name, check in result.get("checks", {}).items() if not check["ok"]}
    assert "error" not in result, f"{result['error']}\n{output[-4000:]}"
    assert not set(failed) - known, json.dumps(failed, indent=1)[:4000] + "\n" + output[-2000:]
    assert len(result["checks"]) >= 7, output[-4000:]
