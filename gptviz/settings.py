"""The server's settings from GPTVIZ_* environment variables, read once, with clear errors.

An operator sets these when hosting (README, "Hosting"); a value that is not a number stops
the server at start with the variable's name and what it wants, not a bare ValueError from
float() deep inside an import.
"""

from __future__ import annotations

import math
import os

MIB = 2**20


def _number(name: str, default: float, minimum: float, what: str) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be {what} (at least {minimum:g}), got {raw!r}")
    return value


def env_mib(name: str, default: float) -> int:
    """A size given in MiB (fractions allowed), in bytes."""
    return int(_number(name, default, 0, "a size in MiB") * MIB)


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """A whole number; 2.0 is accepted as 2, 2.5 is not."""
    value = _number(name, default, minimum, "a whole number")
    if value != int(value):
        raise ValueError(f"{name} must be a whole number, got {os.environ[name]!r}")
    return int(value)
