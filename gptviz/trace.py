"""Run a model once and keep every intermediate, by name, as float32 numpy arrays.

Names follow the model's own modules, so a learner can find each one in the code:

    tok_emb, pos_emb, embeddings (their sum), drop_emb,
    trf_blocks.{i}.input, .norm1, .att.scores, .att.weights, .att.context, .att.out,
    .resid_mid, .norm2, .ff.hidden, .ff.out, .output,
    final_norm, logits

Shapes: (B, T, emb_dim) for the residual stream, (T, emb_dim) for pos_emb,
(B, n_heads, T, T) for att.scores (q . k, before the mask and scaling) and att.weights
(after the causal mask and softmax, before dropout), (B, T, 4*emb_dim) for ff.hidden,
(B, T, vocab_size) for logits. A placeholder component records nothing of its own.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
import torch

from .matmul import inference
from .models import FeedForward, MultiHeadAttention, Recorder, StopForward, TransformerBlock


@dataclass(frozen=True)
class Trace:
    token_ids: np.ndarray  # (B, T) int64
    values: dict  # name -> read-only float32 array

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def names(self) -> list[str]:
        return list(self.values)


def _keep_matching(patterns):
    if patterns is None:
        return None
    patterns = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def forward_names(model) -> list[str]:
    """Every name a trace of `model` records, in the order the forward pass records them."""
    names = ["tok_emb", "pos_emb", "embeddings", "drop_emb"]
    for i, block in enumerate(model.trf_blocks):
        block_names = ["input"]
        if isinstance(block, TransformerBlock):
            block_names.append("norm1")
            if isinstance(block.att, MultiHeadAttention):
                block_names += ["att.scores", "att.weights", "att.context"]
            block_names += ["att.out", "resid_mid", "norm2"]
            if isinstance(block.ff, FeedForward):
                block_names.append("ff.hidden")
            block_names.append("ff.out")
        block_names.append("output")
        names += [f"trf_blocks.{i}.{n}" for n in block_names]
    return names + ["final_norm", "logits"]


def trace(model, token_ids, keep=None, dropout_generator: torch.Generator | None = None) -> Trace:
    """One forward pass of `model` on `token_ids` ((T,) or (B, T)), every intermediate kept.

    `keep`: glob patterns of names to keep (default all), e.g. ("trf_blocks.3.att.*", "logits").
    `dropout_generator`: apply dropout with masks from this generator; None means no dropout.

    Safe on a model shared between threads: it never changes the model's mode, registers
    nothing on it and never touches the global random number generator.
    """
    ids = torch.as_tensor(np.asarray(token_ids), dtype=torch.long)
    if ids.ndim == 1:
        ids = ids.unsqueeze(0)
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"token_ids must be (T,) or (B, T) with T >= 1, got shape {tuple(ids.shape)}")
    context_length, vocab_size = model.pos_emb.num_embeddings, model.tok_emb.num_embeddings
    if ids.shape[1] > context_length:
        raise ValueError(f"{ids.shape[1]} tokens is more than the model's context_length of {context_length}")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}), got {int(ids.min())}..{int(ids.max())}")
    keep_fn = _keep_matching(keep)
    # Stop after the last name asked for: a page showing embeddings or one early layer does
    # not pay for the later blocks and the (B, T, vocab_size) logits.
    wanted = [name for name in forward_names(model) if keep_fn is None or keep_fn(name)]
    recorder = Recorder(keep=keep_fn, generator=dropout_generator, stop_after=wanted[-1] if wanted else "tok_emb")
    with inference():
        try:
            model(ids, recorder=recorder)
        except StopForward:
            pass
    values = {}
    for name, tensor in recorder.values.items():
        array = tensor.to(torch.float32).numpy()
        array.setflags(write=False)  # traces are cached and shared: read-only
        values[name] = array
    return Trace(ids.numpy(), values)
