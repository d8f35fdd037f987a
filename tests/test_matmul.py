"""gptviz.matmul: forward passes run their linear layers through oneDNN, with the same numbers."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptviz import matmul
from gptviz.build import GPT, ModelSpec, build_model
from gptviz.config import config_key
from gptviz.trace import trace

needs_onednn = pytest.mark.skipif(not matmul.uses_onednn(), reason="this torch build has no oneDNN linear")


@pytest.fixture
def counted(monkeypatch):
    """matmul's oneDNN op, wrapped to count its calls."""
    calls = []
    real = matmul._OP

    def op(*args):
        calls.append(tuple(args[1].shape))
        return real(*args)

    monkeypatch.setattr(matmul, "_OP", op)
    return calls


@needs_onednn
def test_a_trace_runs_every_linear_layer_through_onednn_with_the_same_numbers(counted):
    cfg = {"vocab_size": 50, "context_length": 8, "emb_dim": 48, "n_heads": 4, "n_layers": 2,
           "drop_rate": 0.1, "qkv_bias": True}
    model = build_model(ModelSpec(kind=GPT, config=config_key(cfg), seed=1)).model
    ids = [[1, 5, 9, 2, 7]]
    with torch.inference_mode():
        expected = model(torch.tensor(ids)).numpy()  # torch's default BLAS
    assert counted == []
    logits = trace(model, ids)["logits"]
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert len(counted) == n_linear
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("rows", [1, 2, 32])
def test_the_124m_output_head_agrees_with_the_default_product(rows):
    """The one product where oneDNN is most used: 768 -> 50,257, at GPT-2's init scale."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, rows, 768, generator=gen)
    weight = torch.randn(50257, 768, generator=gen) * 0.02
    expected = F.linear(x, weight)
    with matmul.inference():
        got = F.linear(x, weight)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * expected.abs().max()


@needs_onednn
def test_what_onednn_does_not_take_falls_back_to_torch(counted):
    x, weight, bias = torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64), None
    with matmul.inference():
        got = F.linear(x, weight, bias)
        one_dim = F.linear(torch.randn(4), torch.randn(2, 4))
    assert counted == []
    torch.testing.assert_close(got, F.linear(x, weight))
    assert one_dim.shape == (2,)


@needs_onednn
@pytest.mark.parametrize("one_row_in_mkl", [True, False])
def test_single_rows_stay_in_mkl_on_intel_only(counted, monkeypatch, one_row_in_mkl):
    """A generation step (one row) goes to MKL where MKL's matrix-vector product is faster."""
    monkeypatch.setattr(matmul, "ONE_ROW_IN_MKL", one_row_in_mkl)
    weight = torch.randn(3, 4)
    with matmul.inference():
        F.linear(torch.randn(1, 1, 4), weight)  # one token's step
        F.linear(torch.randn(1, 2, 4), weight)  # a prompt of two
    assert counted == ([(3, 4)] if one_row_in_mkl else [(3, 4), (3, 4)])
    counted.clear()
    with matmul.inference(rows=1):  # a caller that knows: the switch is skipped, not consulted
        got = F.linear(torch.randn(1, 1, 4), weight)
    assert counted == ([] if one_row_in_mkl else [(3, 4)])
    assert got.shape == (1, 1, 3)


def test_the_cpu_vendor_comes_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert matmul.cpu_vendor(str(cpuinfo)) == "AuthenticAMD"
    cpuinfo.write_text("processor\t: 0\nCPU implementer\t: 0x41\n")  # an ARM machine: no vendor_id
    assert matmul.cpu_vendor(str(cpuinfo)) == ""
    assert matmul.cpu_vendor(str(tmp_path / "missing")) == ""


@needs_onednn
def test_the_switch_is_per_thread(counted):
    """A session tracing inside inference() leaves another thread's products alone."""
    inside, done = threading.Event(), threading.Event()

    def hold():
        with matmul.inference():
            F.linear(torch.randn(2, 4), torch.randn(3, 4))
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(10)
    with torch.inference_mode():
        F.linear(torch.randn(2, 4), torch.randn(3, 4))  # this thread: not switched
    done.set()
    thread.join()
    assert counted == [(3, 4)]


def _uses_onednn_with(value: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPTVIZ_ONEDNN_LINEAR": value}
    return subprocess.run(
        [sys.executable, "-c", "from gptviz import matmul; print(matmul.uses_onednn())"],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_gptviz_onednn_linear_0_turns_it_off():
    done = _uses_onednn_with("0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_a_bad_setting_names_the_variable():
    done = _uses_onednn_with("fast")
    assert done.returncode != 0
    assert "GPTVIZ_ONEDNN_LINEAR must be a whole number" in done.stderr


MEMORY_PROBE = """
import torch, torch.nn.functional as F
from gptviz import matmul
def rss_mb():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024
weight, x = torch.randn(256, 64), torch.randn(400, 64)
with matmul.inference():
    F.linear(x[:1], weight)
    before = rss_mb()
    for rows in range(2, 400):  # 398 new shapes, as a server sees every text length
        F.linear(x[:rows], weight)
print(rss_mb() - before)
"""


@needs_onednn
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_new_shapes_do_not_grow_the_server_without_bound():
    """oneDNN keeps ~0.6 MB per shape in caches of 1024 by default (measured: +243 MB for these
    398 shapes); matmul caps them, and the same run grows by ~13 MB."""
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 60


def test_importing_it_leaves_the_global_rng_alone():
    """A learner seeds torch, then imports gptviz and builds: the import must not draw numbers."""
    done = subprocess.run(
        [sys.executable, "-c",
         "import torch; torch.manual_seed(123); from gptviz import build, generation, matmul, stepper, trace; "
         "print(torch.rand(1).item() == torch.rand(1, generator=torch.Generator().manual_seed(123)).item())"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
