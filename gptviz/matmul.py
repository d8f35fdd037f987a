"""Inference with nn.Linear's matrix products in oneDNN instead of torch's default BLAS (MKL).

Measured on the 2-core AMD EPYC the benchmarks run on (one torch thread, 2026-12-02): the
124M output head, 32 tokens x 768 -> 50,257 logits, takes 37 ms in oneDNN against 77 ms in
MKL's sgemm, so the Predictions page's trace fell from 227 to 171 ms; a generation of 10
tokens from 613 to 579 ms; the Model page's trace (no head) stayed at 132-135 ms. The results
agree with MKL's to about 1e-6 relative (another order of summation), far below what any
page prints. `GPTVIZ_ONEDNN_LINEAR=0` turns it off.

`inference()` replaces `torch.inference_mode()` around a forward pass. The switch is a torch
function mode, which is thread-local: only forward passes run inside it change, and the
course's modules stay plain nn.Linear.

oneDNN keeps what it prepared for each matrix shape (0.1-0.9 MB) in two caches of 1024 entries,
and every new text length brings 4 new shapes: a server fed every length from 1 to 300 tokens
grew by 1.7 GB. Capped at 16 entries (the last few lengths; a new length costs ~13 ms more),
the same run grew by 95 MB, against 46 MB with MKL. The caps must be set before oneDNN's first
use, which is this module's own probe below.

One exception, by CPU vendor: a single row (a generation step's matrix-vector products, which
stream all the weights from memory) stays in MKL on Intel CPUs. On the 2-core Intel Xeon of
2026-12-02 (second machine) a 124M decode step took 37-38 ms in MKL against 42-43 ms in oneDNN;
on the AMD EPYC, where MKL takes its generic code paths, oneDNN read the same weights in 33 ms
against MKL's 39-43 ms. With more rows oneDNN was the faster on both as a whole (Intel: a 32-token
prefill 82-89 against 89-98 ms; AMD: the output head twice as fast).
"""

from __future__ import annotations

import contextlib
import os

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .settings import env_int

ENABLED = bool(env_int("GPTVIZ_ONEDNN_LINEAR", 1, minimum=0))
CACHE_ENTRIES = "16"
for _variable in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):  # oneDNN's, ideep's
    os.environ.setdefault(_variable, CACHE_ENTRIES)


def _onednn_linear():
    """oneDNN's linear op, or None where this torch build has none (or it computes wrongly)."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
        # Fixed numbers, not torch.randn: importing gptviz must not move the global RNG, which a
        # learner's torch.manual_seed(123) before building a model relies on.
        x, w, b = torch.arange(24.0).reshape(3, 8).sin(), torch.arange(40.0).reshape(5, 8).cos(), torch.arange(5.0)
        ok = torch.allclose(op(x, w, b, "none", [], ""), F.linear(x, w, b), atol=1e-5)
    except (AttributeError, RuntimeError):
        return None
    return op if ok else None


_OP = _onednn_linear() if ENABLED and torch.backends.mkldnn.is_available() else None


def cpu_vendor(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's vendor id ("GenuineIntel", "AuthenticAMD", ...), or "" where it cannot be read."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# Single rows (generation steps) stay in MKL where MKL's matrix-vector product is the faster one.
ONE_ROW_IN_MKL = cpu_vendor() == "GenuineIntel"


class _OneDNNLinear(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and len(args) >= 2:  # nn.Linear's call: F.linear(input, weight, bias)
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if (x.dtype == weight.dtype == torch.float32 and weight.dim() == 2 and x.dim() >= 2 and not x.is_cuda
                    and not (ONE_ROW_IN_MKL and x.numel() == x.shape[-1])):
                return _OP(x, weight, bias, "none", [], "")
        return func(*args, **kwargs)


@contextlib.contextmanager
def inference(rows: int | None = None):
    """torch.inference_mode, with every float32 nn.Linear / F.linear computed by oneDNN.

    `rows`: how many rows every product inside will have, when the caller knows (a generation
    step: 1). Where single rows stay in MKL the switch is then not entered at all: its dispatch
    of every torch call costs ~2 ms of a 40 ms step.
    """
    with torch.inference_mode():
        if _OP is None or (rows == 1 and ONE_ROW_IN_MKL):
            yield
        else:
            with _OneDNNLinear():
                yield


def uses_onednn() -> bool:
    return _OP is not None
