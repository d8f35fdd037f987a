"""Building a model from a description: which class, which config, which parts, which seed.

A `ModelSpec` is frozen and hashable, so it is the key under which the app caches a built
model. Building is the one place that uses the global RNG (nn.Module initialisers draw
from it); a lock and `fork_rng` keep it from interleaving with another thread's build.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from . import init_cache
from .config import estimate_bytes, validate_config
from .models import ALL_PARTS, DummyGPTModel, GPTModel

SKELETON = "DummyGPTModel"  # the seed's skeleton
GPT = "GPTModel"  # real components (all of them, or a mix with placeholders)
PRETRAINED = "pretrained"  # GPTModel with GPT-2 weights from a checkpoint
MODEL_KINDS = (SKELETON, GPT, PRETRAINED)

_RNG_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    kind: str = SKELETON
    config: tuple = ()  # config_key(cfg)
    parts: frozenset = field(default=ALL_PARTS)  # real parts, for GPTModel
    seed: int = 123
    weights: str = ""  # for PRETRAINED: a checkpoint directory or .safetensors file
    # For PRETRAINED: refuse larger weight files. A check at build time, not part of what the model
    # is, so not in the cache key: the UI derives it from the memory free now, which changes every rerun.
    max_bytes: int | None = field(default=None, compare=False)

    @property
    def cfg(self) -> dict:
        return dict(self.config)

    @property
    def label(self) -> str:
        if self.kind == PRETRAINED:
            return f"GPTModel with trained weights ({self.weights})"
        if self.kind == SKELETON:
            return "DummyGPTModel (the seed's skeleton)"
        if self.parts == ALL_PARTS:
            return "GPTModel (real blocks)"
        real = ", ".join(sorted(self.parts)) or "none"
        return f"GPTModel mix (real: {real})"


@dataclass
class BuiltModel:
    model: torch.nn.Module
    cfg: dict  # the config the model was built with (read from the checkpoint when trained)
    # The global RNG's state right after the model was built under its seed: where the
    # seed's first dropout mask is drawn from. A trace copies it into its own generator.
    rng_state: torch.Tensor

    def dropout_generator(self) -> torch.Generator:
        generator = torch.Generator()
        generator.set_state(self.rng_state)
        return generator


def build_model(spec: ModelSpec) -> BuiltModel:
    """Build the model as the course does (`torch.manual_seed(seed)` then the constructor).

    The model is frozen (no gradients) and put in eval mode once, here: a built model is
    shared, so nothing may toggle its mode later. Dropout, when wanted, comes from a trace's
    own generator.
    """
    if spec.kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {spec.kind!r}; choose from {MODEL_KINDS}")
    if spec.kind == PRETRAINED:
        from .weights import config_of, load_gpt2

        model = load_gpt2(spec.weights, max_bytes=spec.max_bytes)  # eval mode, frozen, no global RNG
        # No constructor drew from a seed here, so dropout masks start from the seed itself.
        return BuiltModel(model, config_of(model), torch.Generator().manual_seed(spec.seed).get_state())
    cfg = validate_config(spec.cfg, parts=spec.parts, placeholder_blocks=spec.kind == SKELETON)

    def construct():
        return DummyGPTModel(cfg) if spec.kind == SKELETON else GPTModel(cfg, spec.parts)

    stored = _init_file(spec, cfg)
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        loaded = init_cache.load(stored, construct) if stored is not None else None
        if loaded is None:
            torch.manual_seed(spec.seed)
            model = construct()
            rng_state = torch.get_rng_state()
    if loaded is not None:
        model, rng_state = loaded
    elif stored is not None:
        init_cache.save_in_background(stored, model, rng_state)
    model.requires_grad_(False)
    model.eval()
    return BuiltModel(model, cfg, rng_state)


def _init_file(spec: ModelSpec, cfg: dict):
    """Where this model's initial weights are kept on disk (see init_cache), or None: the
    cache is off, or the model is small enough to build in milliseconds."""
    directory = init_cache.cache_dir()
    placeholder_blocks = spec.kind == SKELETON
    if directory is None or estimate_bytes(cfg, spec.parts, placeholder_blocks) < init_cache.MIN_BYTES:
        return None
    return directory / init_cache.file_name(spec.kind, spec.config, spec.parts, spec.seed)
