"""GPT configurations: the seed's GPT_CONFIG_124M, presets, validation and size estimates.

Configs stay plain dicts, as in the course, so `cfg["emb_dim"]` reads the same here as in
the chapter. `config_key` turns one into a hashable tuple for caches.
"""

from __future__ import annotations

import os

# Exactly the seed's dict, key for key and value for value.
GPT_CONFIG_124M = {
    "vocab_size": 50257,  # BPE vocabulary of GPT-2
    "context_length": 1024,  # how many tokens the model can look at at once
    "emb_dim": 768,  # embedding dimension
    "n_heads": 12,  # attention heads
    "n_layers": 12,  # transformer blocks
    "drop_rate": 0.1,  # dropout rate
    "qkv_bias": False,  # bias in the query, key and value projections
}

CONFIG_KEYS = tuple(GPT_CONFIG_124M)
INT_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")
GPT2_VOCAB_SIZE = 50257


def _preset(**changes) -> dict:
    return {**GPT_CONFIG_124M, **changes}


# The GPT-2 family as in the course (chapter 5 loads these sizes), plus a tiny one.
PRESETS = {
    "gpt2-small (124M)": _preset(),
    "gpt2-medium (355M)": _preset(emb_dim=1024, n_layers=24, n_heads=16),
    "gpt2-large (774M)": _preset(emb_dim=1280, n_layers=36, n_heads=20),
    "gpt2-xl (1558M)": _preset(emb_dim=1600, n_layers=48, n_heads=25),
    # Small enough to build and run instantly; the vocabulary stays GPT-2's so every
    # token id the tokenizer produces has an embedding row.
    "tiny (teaching)": _preset(context_length=64, emb_dim=48, n_heads=4, n_layers=2),
}
DEFAULT_PRESET = "gpt2-small (124M)"


class ConfigError(ValueError):
    """A config a model cannot be built from; `problems` lists every reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def config_key(cfg: dict) -> tuple:
    """A hashable, order-independent form of a config, for cache keys."""
    return tuple(sorted(cfg.items()))


def count_parameters(cfg: dict, parts=None, placeholder_blocks: bool = False) -> list[dict]:
    """Parameters per component, computed from the config alone (nothing is allocated).

    `parts` are the real components inside each block (see `models.PARTS`); the seed's
    skeleton is `placeholder_blocks=True`. Each row: component, params, fp32 bytes.
    """
    from .models import ALL_PARTS

    parts = ALL_PARTS if parts is None else frozenset(parts)
    d, v, t, n = cfg["emb_dim"], cfg["vocab_size"], cfg["context_length"], cfg["n_layers"]
    qkv = 3 * (d * d + (d if cfg["qkv_bias"] else 0))
    att = qkv + d * d + d  # W_query, W_key, W_value, out_proj (with bias)
    ff = d * 4 * d + 4 * d + 4 * d * d + d  # expand and project back, both with bias
    norm = 2 * d  # scale and shift
    if placeholder_blocks:
        block_rows = [("attention", 0), ("feed_forward", 0), ("norm1 + norm2", 0)]
        final_norm = 0
    else:
        block_rows = [
            ("attention", att if "attention" in parts else 0),
            ("feed_forward", ff if "feed_forward" in parts else 0),
            ("norm1 + norm2", 2 * norm if "layer_norm" in parts else 0),
        ]
        final_norm = norm if "layer_norm" in parts else 0
    rows = [("tok_emb", v * d), ("pos_emb", t * d)]
    rows += [(f"trf_blocks (x{n}): {name}", n * p) for name, p in block_rows]
    rows += [("final_norm", final_norm), ("out_head", d * v)]
    return [{"component": c, "params": p, "bytes_fp32": 4 * p} for c, p in rows]


def total_parameters(cfg: dict, parts=None, placeholder_blocks: bool = False, tied: bool = False) -> int:
    """All parameters; with `tied`, out_head shares tok_emb's matrix as GPT-2 does."""
    total = sum(r["params"] for r in count_parameters(cfg, parts, placeholder_blocks))
    return total - cfg["emb_dim"] * cfg["vocab_size"] if tied else total


def estimate_bytes(cfg: dict, parts=None, placeholder_blocks: bool = False) -> int:
    """Memory a built model takes: fp32 weights plus each real attention's causal mask
    (context_length^2 bools per layer, which a huge context_length makes the larger part)."""
    from .models import ALL_PARTS

    parts = ALL_PARTS if parts is None else frozenset(parts)
    masks = 0 if placeholder_blocks or "attention" not in parts else cfg["n_layers"] * cfg["context_length"] ** 2
    return 4 * total_parameters(cfg, parts, placeholder_blocks) + masks


def available_memory_bytes() -> int:
    """Memory this process may still use: the smaller of free RAM and a cgroup limit."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        limits.append(info.get("MemAvailable", info.get("MemFree", 0)))
    except (OSError, ValueError, IndexError):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
            if raw.isdigit():
                limits.append(int(raw))
        except OSError:
            pass
    return min(limits)


def validate_config(cfg: dict, memory_budget: int | None = None, parts=None, placeholder_blocks=False) -> dict:
    """Return the config if a model can be built from it; raise ConfigError listing every problem.

    `memory_budget` (bytes) defaults to the memory available now; the fp32 weights must
    fit in it, estimated before anything is allocated.
    """
    if not isinstance(cfg, dict):
        raise ConfigError([f"a config is a dict of settings, not {type(cfg).__name__}"])
    problems = []
    unknown = sorted(set(cfg) - set(CONFIG_KEYS), key=str)
    if unknown:
        problems.append(f"unknown key(s) {', '.join(map(repr, unknown))}; the keys are {', '.join(CONFIG_KEYS)}")
    missing = [k for k in CONFIG_KEYS if k not in cfg]
    if missing:
        problems.append(f"missing key(s) {', '.join(missing)}")
    for key in INT_KEYS:
        if key not in cfg:
            continue
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key} must be a whole number, got {value!r}")
        elif value <= 0:
            problems.append(f"{key} must be positive, got {value}")
    if "drop_rate" in cfg:
        rate = cfg["drop_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (0 <= rate < 1):
            problems.append(f"drop_rate must be a number in [0, 1), got {rate!r}")
    if "qkv_bias" in cfg and not isinstance(cfg["qkv_bias"], bool):
        problems.append(f"qkv_bias must be True or False, got {cfg['qkv_bias']!r}")
    sizes_ok = all(isinstance(cfg.get(k), int) and not isinstance(cfg.get(k), bool) and cfg[k] > 0 for k in INT_KEYS)
    if sizes_ok and cfg["emb_dim"] % cfg["n_heads"]:
        problems.append(
            f"emb_dim ({cfg['emb_dim']}) must be divisible by n_heads ({cfg['n_heads']}): "
            "each head gets emb_dim / n_heads dimensions"
        )
    if sizes_ok and not problems:
        needed = estimate_bytes(cfg, parts, placeholder_blocks)
        budget = available_memory_bytes() if memory_budget is None else memory_budget
        if needed > budget:
            problems.append(
                f"this model needs {needed / 2**30:.2f} GiB (fp32 weights and attention masks), "
                f"more than the {budget / 2**30:.2f} GiB available; choose smaller sizes"
            )
    if problems:
        raise ConfigError(problems)
    return cfg
