"""What every benchmark shares: the machine it ran on, budgets, and writing results as JSON.

Results go to artifacts/bench/<name>.json (gitignored), each with a description of the
machine, so numbers from a laptop and from a 2-core host are never compared blind.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.stdout.reconfigure(line_buffering=True)  # progress shows up as it happens, even through a pipe
OUT_DIR = ROOT / "artifacts" / "bench"
MB = 1024 * 1024

# The budgets (Performance and footprint), in one place.
BUDGETS = {
    "skeleton_peak_rss_mb": 900,  # 124M DummyGPTModel app, server process peak RSS
    "gpt_peak_rss_mb": 1400,  # 124M GPTModel app
    "session_delta_mb": 50,  # each extra browser session
    "rerun_sent_mb": 1.5,  # websocket bytes received by the browser per rerun, every page
    "warm_server_ms": 300,  # page script run after a text change, 124M GPT, 32 tokens
    "warm_browser_ms": 1000,  # typing to notRunning + charts drawn, same case
    "cold_start_s": 8.0,  # `streamlit run` to the first page fully drawn
}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_mb() -> dict:
    info = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, rest = line.split(":", 1)
                if key in ("MemTotal", "MemAvailable"):
                    info[key] = int(rest.split()[0]) // 1024
    except OSError:
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
            # "max", or a huge number, both mean no limit
            if raw.isdigit() and int(raw) // MB < info.get("MemTotal", float("inf")):
                info["cgroup_limit"] = int(raw) // MB
        except OSError:
            pass
    return info


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages: above the core count, timings include waiting for a CPU."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine() -> dict:
    """CPU model, cores, RAM and the versions that decide the numbers."""
    info = {
        "cpu_model": _cpu_model(),
        "cores_available": available_cores(),
        "cpu_count": os.cpu_count(),
        "ram_mb": _ram_mb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": load_average(),
    }
    for dist in ("torch", "streamlit", "plotly", "numpy", "playwright"):
        info[dist] = _version(dist)
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def describe_machine(info: dict) -> str:
    ram = info["ram_mb"]
    ram_text = f"{ram.get('MemTotal', '?')} MB RAM ({ram.get('MemAvailable', '?')} MB available"
    ram_text += f", cgroup limit {ram['cgroup_limit']} MB)" if "cgroup_limit" in ram else ")"
    text = (
        f"{info['cpu_model']}, {info['cores_available']} cores, {ram_text}; python {info['python']}, "
        f"torch {info['torch']}, streamlit {info['streamlit']}, plotly {info['plotly']}; "
        f"load average {' '.join(f'{x:.1f}' for x in info['load_average'])}"
    )
    if info["load_average"] and info["load_average"][0] > info["cores_available"]:
        text += (f"\nWARNING: load average {info['load_average'][0]:.1f} > {info['cores_available']} cores: other "
                 "processes compete for the CPU and every timing below is inflated. Re-run on a quiet machine.")
    return text


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def verdict(name: str, value, budget, unit: str, lower_is_better: bool = True) -> dict:
    """PASS/FAIL of one measured value against its budget, printed and returned for the JSON."""
    if value is None:
        status = "NOT MEASURED"
    else:
        status = "PASS" if (value <= budget if lower_is_better else value >= budget) else "FAIL"
    shown = "-" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")
    print(f"  [{status}] {name}: {shown} {unit} (budget {budget} {unit})")
    return {"name": name, "value": value, "budget": budget, "unit": unit, "status": status}


def write_result(name: str, result: dict, quiet: bool = False) -> Path:
    """Write artifacts/bench/<name>.json with the machine description and a timestamp."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),  # its load_average is the one at the end of the run
        **result,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    if not quiet:
        print(f"wrote {path.relative_to(ROOT)}")
    return path
