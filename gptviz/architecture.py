"""The model's modules as a table: names as in the code, parameters, and the data's shape.

Reads a built model (named_modules, parameters) without running or changing it, so the
shared cached model is safe to pass in. Output shapes follow from the config and the
batch's (B, T); tests check them against a trace.
"""

from __future__ import annotations

import functools
import inspect

import pandas as pd
import torch.nn as nn

from . import models
from .build import SKELETON

# One line per kind of module on what it does to the data, for a learner reading the table.
ROLES = {
    "GPTModel": "token ids -> logits",
    "DummyGPTModel": "token ids -> logits (the seed's skeleton)",
    "Embedding": "looks up one learned row per id",
    "Dropout": "zeros a random fraction p of values (scales the rest by 1/(1-p))",
    "Sequential": "runs its children one after another",
    "TransformerBlock": "x + att(norm1(x)), then x + ff(norm2(x))",
    "DummyTransformerBlock": "placeholder: returns its input",
    "MultiHeadAttention": "mixes information between tokens (causal)",
    "PlaceholderSublayer": "placeholder: adds nothing (returns zeros)",
    "FeedForward": "expands each token to 4 x emb_dim and back",
    "GELU": "smooth non-linearity",
    "LayerNorm": "each token to mean 0, std 1, then scale and shift",
    "DummyLayerNorm": "placeholder: returns its input",
}
LINEAR_ROLES = {
    "W_query": "queries: what each token looks for",
    "W_key": "keys: what each token offers",
    "W_value": "values: what each token passes on",
    "out_proj": "combines the heads' context vectors",
    "out_head": "one logit per vocabulary entry",
}


def output_shape(name: str, module: nn.Module, cfg: dict, batch_size: int, n_tokens: int) -> tuple:
    """Shape of what `module` returns in the forward pass for a (batch_size, n_tokens) batch."""
    B, T, D = batch_size, n_tokens, cfg["emb_dim"]
    if name == "pos_emb":
        return (T, D)  # one row per position, broadcast over the batch when added
    if name.endswith("att.dropout"):
        return (B, cfg["n_heads"], T, T)  # dropout on the attention weights
    if isinstance(module, nn.Linear):
        return (B, T, module.out_features)
    if isinstance(module, models.GELU):
        return (B, T, 4 * D)
    if name.endswith("ff.layers"):
        return (B, T, D)
    if isinstance(module, (models.DummyGPTModel, models.GPTModel)):
        return (B, T, cfg["vocab_size"])
    return (B, T, D)


def _describe(module: nn.Module) -> str:
    """A short constructor-like description: Linear(768 -> 3072, bias=True), Embedding(50257, 768)."""
    if isinstance(module, nn.Linear):
        return f"Linear({module.in_features} → {module.out_features}, bias={module.bias is not None})"
    if isinstance(module, nn.Dropout):
        return f"Dropout(p={module.p})"
    extra = module.extra_repr()
    return f"{type(module).__name__}({extra})" if extra else type(module).__name__


def _role(name: str, module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        key = name.rsplit(".", 1)[-1]
        if key in LINEAR_ROLES:
            return LINEAR_ROLES[key]
        return "expand to 4 x emb_dim" if name.endswith("layers.0") else "project back to emb_dim"
    return ROLES.get(type(module).__name__, "")


def _shown(name: str, expand_all: bool) -> bool:
    """Block 0 is listed with its submodules; other blocks as one line unless expand_all."""
    parts = name.split(".")
    return expand_all or len(parts) <= 2 or parts[0] != "trf_blocks" or parts[1] == "0"


def module_table(model: nn.Module, cfg: dict, batch_size: int, n_tokens: int, expand_all: bool = False) -> pd.DataFrame:
    """One row per module, in creation order (the order of the course's __init__).

    Columns: module (indented short name, a readable tree), name (as in the code, e.g.
    trf_blocks.0.att.W_query), class, parameters (of the module and its children), output
    shape for this batch, and what it does. The root row is the whole model.
    """
    rows = []
    for name, module in model.named_modules():
        if not _shown(name, expand_all):
            continue
        depth = name.count(".") + 1 if name else 0
        short = name.rsplit(".", 1)[-1] if name else type(module).__name__
        rows.append({
            "module": "\u2003" * depth + short,
            "name": name or "(model)",
            "class": _describe(module),
            "parameters": sum(p.numel() for p in module.parameters()),
            "output shape": " x ".join(map(str, output_shape(name, module, cfg, batch_size, n_tokens))),
            "what it does": _role(name, module),
        })
    return pd.DataFrame(rows)


def ties_out_head(model: nn.Module) -> bool:
    """True when out_head uses tok_emb's matrix itself (GPT-2's checkpoints), not a copy."""
    return model.out_head.weight is model.tok_emb.weight


# --- the code of each component ------------------------------------------------------------

# The seed's placeholders exactly as the notebook writes them (the app's copies in
# gptviz.models take extra optional arguments for the trace, and do the same thing).
SEED_PLACEHOLDERS = {
    "DummyTransformerBlock": (
        "class DummyTransformerBlock(nn.Module):\n"
        "    def __init__(self, cfg):\n"
        "        super().__init__()\n"
        "        # A simple placeholder\n"
        "\n"
        "    def forward(self, x):\n"
        "        # This block does nothing and just returns its input.\n"
        "        return x\n"
    ),
    "DummyLayerNorm": (
        "class DummyLayerNorm(nn.Module):\n"
        "    def __init__(self, normalized_shape, eps=1e-5):\n"
        "        super().__init__()\n"
        "        # The parameters here are just to mimic the LayerNorm interface.\n"
        "\n"
        "    def forward(self, x):\n"
        "        # This layer does nothing and just returns its input.\n"
        "        return x\n"
    ),
}

# Each real component, and what stands in for it when it is not real.
COMPONENTS = {
    "LayerNorm": "DummyLayerNorm",
    "GELU": None,  # part of FeedForward: no placeholder of its own
    "FeedForward": "PlaceholderSublayer",
    "MultiHeadAttention": "PlaceholderSublayer",
    "TransformerBlock": "DummyTransformerBlock",
}


@functools.lru_cache(maxsize=None)  # inspect reads and parses the file: ~10 ms a call, every rerun
def source(class_name: str) -> str:
    """The code of a class as it runs here: the seed's text for its placeholders, else gptviz.models."""
    if class_name in SEED_PLACEHOLDERS:
        return SEED_PLACEHOLDERS[class_name]
    return inspect.getsource(getattr(models, class_name))


def component_status(component: str, kind: str, parts) -> str:
    """Whether `component` runs in this model: "real", "placeholder" or "absent".

    In the seed's skeleton every block is a DummyTransformerBlock, so nothing inside a
    block exists at all; only the block and final_norm have placeholders.
    """
    if kind == SKELETON:
        return "placeholder" if component in ("TransformerBlock", "LayerNorm") else "absent"
    part = {"LayerNorm": "layer_norm", "GELU": "feed_forward", "FeedForward": "feed_forward",
            "MultiHeadAttention": "attention"}.get(component)
    if part is None or part in parts:
        return "real"
    return "placeholder" if COMPONENTS[component] else "absent"
