"""Building a model from a description: which class, which config, which parts, which seed.

A `ModelSpec` is frozen and hashable, so it is the key under which the app caches a built
model. Building is the one place that uses the global RNG (nn.Module initialisers draw
from it); a lock and `fork_rng` keep it from interleaving with another thread's build.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import torch

from .config import validate_config
from .models import ALL_PARTS, DummyGPTModel, GPTModel

SKELETON = "DummyGPTModel"  # the seed's skeleton
GPT = "GPTModel"  # real components (all of them, or a mix with placeholders)
MODEL_KINDS = (SKELETON, GPT)

_RNG_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    kind: str = SKELETON
    config: tuple = ()  # config_key(cfg)
    parts: frozenset = field(default=ALL_PARTS)  # real parts, for GPTModel
    seed: int = 123

    @property
    def cfg(self) -> dict:
        return dict(self.config)

    @property
    def label(self) -> str:
        if self.kind == SKELETON:
            return "DummyGPTModel (the seed's skeleton)"
        if self.parts == ALL_PARTS:
            return "GPTModel (real blocks)"
        real = ", ".join(sorted(self.parts)) or "none"
        return f"GPTModel mix (real: {real})"


@dataclass
class BuiltModel:
    model: torch.nn.Module
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
    cfg = validate_config(spec.cfg, parts=spec.parts, placeholder_blocks=spec.kind == SKELETON)
    if spec.kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {spec.kind!r}; choose from {MODEL_KINDS}")
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = DummyGPTModel(cfg) if spec.kind == SKELETON else GPTModel(cfg, spec.parts)
        rng_state = torch.get_rng_state()
    model.requires_grad_(False)
    model.eval()
    return BuiltModel(model, rng_state)
