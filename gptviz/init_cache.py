"""A seeded model's initial weights, kept on disk: a restart or a rebuild reads them back.

`torch.manual_seed(123)` and the course's constructor draw 163M random numbers for the
124M GPTModel, one after another from one generator: 1.1-1.7 s on this project's machine,
at every server start and every time the model cache has evicted a model a class switches
back to. The draws cannot be split across cores without changing the numbers, but they
are the same every time, so the first build writes the weights (and the RNG state the
constructor left, where dropout's masks start) to a file, and later builds map that file
into memory instead (`torch.load(mmap=True)`: nothing is copied; the pages are read when
first used, from the page cache after a restart).

A file is named after everything the numbers depend on: the model class, config, real
parts and seed, torch's version (its RNG and initialisers), and the source of the code
that builds the model. Change any of them and the old file is simply never read again;
the directory is kept under a byte bound, least recently used files first. A file that
does not load is removed, and the model is built as usual.

Only models of at least MIN_BYTES are kept (small ones build in milliseconds). Set
GPTVIZ_INIT_CACHE_DIR to choose the directory, or to an empty value to turn this off;
GPTVIZ_INIT_CACHE_MB bounds it (default 2048).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import init
from torch.overrides import TorchFunctionMode

from .settings import env_mib

FORMAT = 1  # bump when what a file holds changes
MIN_BYTES = 32 * 2**20
SUFFIX = ".pt"
_ABANDONED_TMP_S = 3600  # a temporary file this old was left by a writer that died
# At interpreter exit, how long to let background writes finish (a 124M GPTModel's 0.66 GB
# takes 1-3 s): a script that builds a model and ends must not leave a partial file behind.
_EXIT_WAIT_S = 15.0
# The code whose behaviour decides the numbers: build.py seeds and constructs, models.py initialises,
# config.py validates (and so completes) the config the constructors read.
_SOURCES = ("build.py", "models.py", "config.py")


def cache_dir() -> Path | None:
    """The directory in use, or None when turned off."""
    value = os.environ.get("GPTVIZ_INIT_CACHE_DIR")
    if value is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        value = os.path.join(base, "gptviz", "init")
    return Path(value) if value.strip() else None


def max_bytes() -> int:
    return env_mib("GPTVIZ_INIT_CACHE_MB", 2048)


def _code_digest() -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def file_name(kind: str, config: tuple, parts, seed: int) -> str:
    """The file for these weights: a digest of everything they depend on."""
    what = repr((FORMAT, kind, config, sorted(parts), seed, torch.__version__, _code_digest()))
    return f"{kind}-{hashlib.sha256(what.encode()).hexdigest()[:24]}{SUFFIX}"


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by its full name, the causal masks (not in a state dict) included.
    torch.save keeps views of one storage as views (W_query, W_key, W_value stay stacked)."""
    named = {f"param:{n}": p.detach() for n, p in model.named_parameters(remove_duplicate=False)}
    named |= {f"buffer:{n}": b for n, b in model.named_buffers(remove_duplicate=False)}
    return named


def _put(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    kind, _, path = name.partition(":")
    owner_path, _, leaf = path.rpartition(".")
    owner = model.get_submodule(owner_path)
    if kind == "param":
        owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    else:
        owner._buffers[leaf] = tensor


class _NoRandomInit(TorchFunctionMode):
    """Constructors run, but their initialisers leave each tensor as allocated: uninitialised
    memory that is never touched, since `load` replaces every parameter and buffer. (The meta
    device would do the same, but its first use imports torch's compiler stack: 1.6-2.3 s.)"""

    _INITIALISERS = frozenset({init.kaiming_uniform_, init.uniform_, init.normal_,
                               torch.Tensor.uniform_, torch.Tensor.normal_})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._INITIALISERS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def load(path: Path, make_model) -> tuple[nn.Module, torch.Tensor] | None:
    """(model, rng_state) from `path`: `make_model()` builds the modules without drawing random
    numbers, then the file's tensors become their parameters and buffers. None when there is no
    such file or it does not fit the model (then it is removed)."""
    try:
        saved = torch.load(path, mmap=True, weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # truncated, foreign or unreadable: build instead, and let the next build rewrite it
        _discard(path)
        return None
    with _NoRandomInit():
        model = make_model()
    expected = _tensors(model)
    saved = saved if isinstance(saved, dict) else {}
    tensors, rng_state = saved.get("tensors", {}), saved.get("rng_state")
    fits = set(tensors) == set(expected) and all(
        tensors[n].shape == t.shape and tensors[n].dtype == t.dtype for n, t in expected.items()
    )
    if not fits or not isinstance(rng_state, torch.Tensor) or rng_state.dtype != torch.uint8:
        _discard(path)
        return None
    for name, tensor in tensors.items():
        _put(model, name, tensor)
    with contextlib.suppress(OSError):
        os.utime(path)  # most recently used: pruned last
    return model, rng_state


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):  # e.g. a directory this server may read but not change
        path.unlink(missing_ok=True)


def save(path: Path, model: nn.Module, rng_state: torch.Tensor, limit: int | None = None) -> None:
    """Write atomically (a temporary file, then a rename), then prune the directory to `limit`
    bytes (default: GPTVIZ_INIT_CACHE_MB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path, threading.get_ident())
    try:
        torch.save({"tensors": _tensors(model), "rng_state": rng_state}, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    prune(path.parent, max_bytes() if limit is None else limit, keep=path)


def _tmp_path(path: Path, thread_ident: int | None) -> Path:
    """Where the writer thread `thread_ident` of this process writes `path` before renaming it."""
    return path.with_name(f"{path.name}.{os.getpid()}.{thread_ident}.tmp")


def save_in_background(path: Path, model: nn.Module, rng_state: torch.Tensor) -> threading.Thread:
    """The writer runs beside the page (the file I/O releases the GIL); a failure (disk full, read-only
    directory) only means the next build draws the numbers again."""
    limit = max_bytes()  # read here, in the page's thread: a bad GPTVIZ_INIT_CACHE_MB is an error there

    def write():
        _yield_the_cpu()
        try:
            save(path, model, rng_state, limit)
        except (OSError, RuntimeError):  # torch.save reports a full disk as a RuntimeError
            pass

    thread = threading.Thread(target=write, name="gptviz-init-cache", daemon=True)
    with _WRITERS_LOCK:
        _WRITERS[:] = [(t, p) for t, p in _WRITERS if t.is_alive()] + [(thread, path)]
    thread.start()
    return thread


def _yield_the_cpu() -> None:
    """Lowest CPU priority for the calling thread, so the write takes what the page leaves over.
    Linux only: there a thread id is a valid target for setpriority (elsewhere it would name a process)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


_WRITERS: list[tuple[threading.Thread, Path]] = []  # each writer and the file it writes
_WRITERS_LOCK = threading.Lock()


def wait_for_writes(timeout_s: float = 30) -> None:
    """Until the background writes end. A writer holds its model's tensors: a model evicted from
    the model cache while it is still being written stays in memory until then."""
    with _WRITERS_LOCK:
        writers = list(_WRITERS)
    deadline = time.monotonic() + timeout_s
    for thread, _ in writers:
        thread.join(max(0.0, deadline - time.monotonic()))


@atexit.register
def _finish_writes_at_exit() -> None:
    """Daemon writers are killed when the interpreter ends: mid-write that left a partial temporary
    file of up to 0.66 GB (swept only an hour later) and at times aborted the process from inside
    torch.save. So a script that builds a model and ends waits for the write; what is still
    unfinished after _EXIT_WAIT_S is removed."""
    wait_for_writes(_EXIT_WAIT_S)
    with _WRITERS_LOCK:
        unfinished = [(t, p) for t, p in _WRITERS if t.is_alive()]
    for thread, path in unfinished:
        with contextlib.suppress(OSError):
            _tmp_path(path, thread.ident).unlink(missing_ok=True)


def prune(directory: Path, limit: int, keep: Path | None = None) -> None:
    """Remove the least recently used files until the rest fit `limit` bytes (`keep` stays),
    and temporary files abandoned by writers that died."""
    now = time.time()
    files = []
    for entry in directory.iterdir():
        try:
            stat = entry.stat()
        except FileNotFoundError:  # another server pruned it meanwhile
            continue
        if entry.name.endswith(".tmp"):
            if now - stat.st_mtime > _ABANDONED_TMP_S:
                entry.unlink(missing_ok=True)
        elif entry.suffix == SUFFIX:
            files.append((stat.st_mtime, stat.st_size, entry))
    total = sum(size for _, size, _ in files)
    for _, size, entry in sorted(files):
        if total <= limit:
            break
        if entry != keep:
            entry.unlink(missing_ok=True)
            total -= size
