"""Summary statistics of the residual stream, block by block, from a trace.

Pure numpy/pandas: the Model page shows these numbers, tests check them against numpy.
Trace names are those of `gptviz.trace`: `trf_blocks.{i}.input`, `.norm1`, `.resid_mid`,
`.norm2`, `.output`, then `final_norm`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# The points of a block where the residual stream (or its normed copy) is recorded, in
# the order the forward pass reaches them.
BLOCK_POINTS = ("input", "norm1", "resid_mid", "norm2", "output")
STAT_COLUMNS = ("mean", "std", "min", "max", "rms", "token_mean_absmax", "token_std_mean")


def residual_names(n_layers: int, points=BLOCK_POINTS) -> list[str]:
    """Trace names of the residual stream, block by block, ending with final_norm."""
    return [f"trf_blocks.{i}.{p}" for i in range(n_layers) for p in points] + ["final_norm"]


def keep_patterns(points=BLOCK_POINTS) -> tuple:
    """Glob patterns asking a trace for just these points of every block, and final_norm."""
    return tuple(f"trf_blocks.*.{p}" for p in points) + ("final_norm",)


def tensor_stats(x) -> dict:
    """Statistics over every value of x (..., emb_dim), plus per-token ones (over emb_dim).

    std is the biased one (ddof=0), as LayerNorm uses; rms = sqrt(mean(x^2)). A real
    LayerNorm at initialisation (scale 1, shift 0) makes every token's mean 0 and std 1,
    which token_mean_absmax (largest |per-token mean|) and token_std_mean show.
    """
    x = np.asarray(x, dtype=np.float64)  # float64 sums: a long text has millions of values
    token_mean = x.mean(axis=-1)
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "min": float(x.min()),
        "max": float(x.max()),
        "rms": float(np.sqrt(np.mean(x * x))),
        "token_mean_absmax": float(np.abs(token_mean).max()),
        "token_std_mean": float(x.std(axis=-1).mean()),
    }


def _split(name: str) -> tuple[int | None, str]:
    """("trf_blocks.3.norm1") -> (3, "norm1"); ("final_norm") -> (None, "final_norm")."""
    parts = name.split(".")
    if parts[0] == "trf_blocks" and len(parts) >= 3:
        return int(parts[1]), ".".join(parts[2:])
    return None, name


def activation_stats(values, names=None) -> pd.DataFrame:
    """One row per trace name present in `values` (a Trace or dict of arrays): its statistics.

    Columns: name, layer (block index; n_layers for final_norm, which comes after the last
    block), point (input, norm1, ...), shape, then STAT_COLUMNS.
    """
    names = list(names) if names is not None else list(values.names() if hasattr(values, "names") else values)
    present = [n for n in names if n in values]
    layers = [_split(n)[0] for n in present]
    after_last = max((layer for layer in layers if layer is not None), default=-1) + 1
    rows = []
    for name, layer in zip(present, layers):
        x = values[name]
        rows.append({
            "name": name,
            "layer": after_last if layer is None else layer,
            "point": _split(name)[1],
            "shape": " x ".join(map(str, x.shape)),
            **tensor_stats(x),
        })
    return pd.DataFrame(rows, columns=["name", "layer", "point", "shape", *STAT_COLUMNS])


def block_changes(values, n_layers: int) -> pd.DataFrame:
    """What each block does to the residual stream: output - input, per block.

    `unchanged` is exact equality (a placeholder block returns its input); change_rms is
    rms(output - input) and relative_change is ||output - input|| / ||input||.
    """
    rows = []
    for i in range(n_layers):
        x_in = np.asarray(values[f"trf_blocks.{i}.input"], dtype=np.float64)
        x_out = np.asarray(values[f"trf_blocks.{i}.output"], dtype=np.float64)
        delta = x_out - x_in
        norm_in = np.linalg.norm(x_in)
        rows.append({
            "block": f"trf_blocks.{i}",
            "unchanged": bool(np.array_equal(x_in, x_out)),
            "max_abs_change": float(np.abs(delta).max()),
            "change_rms": float(np.sqrt(np.mean(delta * delta))),
            "relative_change": float(np.linalg.norm(delta) / norm_in) if norm_in else 0.0,
        })
    return pd.DataFrame(rows, columns=["block", "unchanged", "max_abs_change", "change_rms", "relative_change"])
