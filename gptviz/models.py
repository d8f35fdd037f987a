"""The models of chapter 4: the seed's skeleton and the real GPT it stands in for.

Module names and the order in which submodules are created follow the course exactly
(`tok_emb`, `pos_emb`, `drop_emb`, `trf_blocks`, `final_norm`, `out_head`; inside a block
`att`, `ff`, `norm1`, `norm2`, `drop_shortcut`), so `torch.manual_seed(123)` gives the
course's numbers.

Two additions the course does not have, both optional and off by default:
- `recorder`: a `Recorder` passed down one forward call collects named intermediates
  (the trace). Nothing is registered on the module, so a model shared by many sessions
  is never mutated.
- `kv_cache`: a `KVCache` that lets generation feed only the new token each step.

Generation's fast path: when a KV cache is given, nothing is recorded and the model is in
eval mode (see `_fast_path`), the blocks compute the same function with PyTorch's fused
kernels (`F.layer_norm`, `F.gelu`, `F.scaled_dot_product_attention`, one matrix for the
query, key and value projections): the same numbers to float rounding (~1e-6), in fewer
and faster operations. Traces and the plain forward always run the course's lines.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

# The three kinds of real component a learner can switch for a placeholder.
PARTS = ("attention", "feed_forward", "layer_norm")
ALL_PARTS = frozenset(PARTS)


class StopForward(Exception):
    """Raised by a Recorder once it holds everything asked for: the rest is not computed."""


class Recorder:
    """Collects named intermediates during one forward pass.

    `keep(name)` decides what is stored, so a page asking for one layer's attention does
    not pay for all of them. With `generator` set, dropout is applied with masks drawn
    from that generator (never the global RNG); without it, dropout is off, whatever
    mode the model is in.
    """

    def __init__(self, keep=None, generator: torch.Generator | None = None, stop_after: str | None = None):
        self.keep = keep or (lambda name: True)
        self.generator = generator
        self.stop_after = stop_after  # the last name wanted: the forward pass ends there
        self.values: dict[str, torch.Tensor] = {}
        self._prefix: list[str] = []

    @contextlib.contextmanager
    def scope(self, name: str):
        self._prefix.append(name)
        try:
            yield
        finally:
            self._prefix.pop()

    def save(self, name: str, tensor: torch.Tensor) -> None:
        full = ".".join([*self._prefix, name])
        if self.keep(full):
            self.values[full] = tensor.detach()
        if full == self.stop_after:
            raise StopForward


    def dropout(self, module: nn.Dropout, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None or module.p == 0:
            return x
        if module.p == 1:
            return torch.zeros_like(x)
        # Same arithmetic as ATen's CPU dropout (bernoulli mask, divide, multiply), so a
        # generator in the state of the global RNG reproduces nn.Dropout bit for bit.
        noise = torch.empty_like(x).bernoulli_(1 - module.p, generator=self.generator)
        noise.div_(1 - module.p)
        return x * noise


def _save(recorder: Recorder | None, name: str, tensor: torch.Tensor) -> None:
    if recorder is not None:
        recorder.save(name, tensor)


def _drop(module: nn.Dropout, x: torch.Tensor, recorder: Recorder | None) -> torch.Tensor:
    """nn.Dropout as the course uses it, unless a trace supplies its own masks."""
    return module(x) if recorder is None else recorder.dropout(module, x)


def _fast_path(module: nn.Module, recorder: Recorder | None, kv_cache) -> bool:
    """Generation's fast path: a KV cache is given, nothing is recorded, dropout is off.

    Only then may a module replace the course's step-by-step arithmetic with fused kernels:
    no intermediate has to be shown, and none of them is random.
    """
    return kv_cache is not None and recorder is None and not module.training


@dataclass
class KVCache:
    """What generation remembers between forward calls: how many tokens the model has seen,
    and every attention layer's keys and values for them, (B, n_heads, T, head_dim).

    `length` is counted here, advanced once per forward call by the model itself, so the next
    token's position is known for every model, also one that stores no keys and values (the
    seed's skeleton, or attention as a placeholder): there each token is computed from its own
    embedding and position alone, so feeding them one at a time gives the full pass's logits.
    """

    layers: dict = field(default_factory=dict)  # layer -> [keys buffer, values buffer, tokens held]
    length: int = 0  # tokens fed through the model so far; the next one sits at this position

    GROW = 128  # buffers grow in steps of this many tokens

    def extend(self, layer: int, keys: torch.Tensor, values: torch.Tensor):
        """Append this step's keys and values; return those of every token so far.

        They are written into buffers with room for more tokens, so a step copies only its
        own tokens, not every earlier one again (as concatenating would).
        """
        held = self.layers.get(layer)  # [keys buffer, values buffer, tokens held], or None
        n = held[2] if held else 0
        total = n + keys.shape[2]
        if torch.is_grad_enabled() and (keys.requires_grad or values.requires_grad):
            # Autograd may keep earlier steps' keys and values for a backward pass: never
            # write into them; concatenate into new tensors instead.
            if held:
                keys = torch.cat([held[0][:, :, :n], keys], dim=2)
                values = torch.cat([held[1][:, :, :n], values], dim=2)
            self.layers[layer] = [keys, values, total]
            return keys, values
        if held is None or held[0].shape[2] < total:  # no room left: move into bigger buffers
            capacity = math.ceil(total / self.GROW) * self.GROW
            buffers = [t.new_empty((*t.shape[:2], capacity, t.shape[3])) for t in (keys, values)]
            if held:
                buffers[0][:, :, :n] = held[0][:, :, :n]
                buffers[1][:, :, :n] = held[1][:, :, :n]
            held = self.layers[layer] = [*buffers, n]
        held[0][:, :, n:total] = keys
        held[1][:, :, n:total] = values
        held[2] = total
        return held[0][:, :, :total], held[1][:, :, :total]

    def copy(self, tokens: int) -> "KVCache":
        """A new cache holding only the first `tokens` tokens (0 < tokens <= length): keys and
        values of a prefix do not depend on what follows it (attention is causal)."""
        if not 0 < tokens <= self.length:
            raise ValueError(f"can copy 1 to {self.length} tokens of this cache, not {tokens}")
        out = KVCache(length=tokens)
        for layer, (keys, values, _) in self.layers.items():
            out.layers[layer] = [keys[:, :, :tokens].clone(), values[:, :, :tokens].clone(), tokens]
        return out

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v, _ in self.layers.values())


# --- The seed's skeleton -------------------------------------------------------------


class DummyTransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        # A simple placeholder

    def forward(self, x, recorder=None, kv_cache=None, layer=0):
        # This block does nothing and just returns its input.
        return x


class DummyLayerNorm(nn.Module):
    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        # The parameters here are just to mimic the LayerNorm interface.

    def forward(self, x):
        # This layer does nothing and just returns its input.
        return x


class _GPTForward(nn.Module):
    """The forward pass both models share, line for line the course's."""

    def forward(self, in_idx, recorder: Recorder | None = None, kv_cache: KVCache | None = None,
                last_only: bool = False):
        """Logits (B, T, vocab_size); with `last_only`, only the last position's: (B, 1, vocab_size).

        With a `kv_cache`, in_idx holds only the tokens after the ones the cache has seen.
        """
        batch_size, seq_len = in_idx.shape
        start = kv_cache.length if kv_cache is not None else 0  # position of in_idx's first token
        tok_embeds = self.tok_emb(in_idx)  # (B, T, emb_dim)
        pos_embeds = self.pos_emb(torch.arange(start, start + seq_len, device=in_idx.device))  # (T, emb_dim)
        x = tok_embeds + pos_embeds  # broadcast over the batch: (B, T, emb_dim)
        _save(recorder, "tok_emb", tok_embeds)
        _save(recorder, "pos_emb", pos_embeds)
        _save(recorder, "embeddings", x)
        x = _drop(self.drop_emb, x, recorder)
        _save(recorder, "drop_emb", x)
        for i, block in enumerate(self.trf_blocks):
            with recorder.scope(f"trf_blocks.{i}") if recorder else contextlib.nullcontext():
                _save(recorder, "input", x)
                x = block(x, recorder=recorder, kv_cache=kv_cache, layer=i)
                _save(recorder, "output", x)
        x = _layer_norm_fused(self.final_norm, x) if _fast_path(self, recorder, kv_cache) else self.final_norm(x)
        _save(recorder, "final_norm", x)
        if last_only:
            x = x[:, -1:, :]  # generation needs only the next token's logits: skip the rest
        logits = self.out_head(x)  # (B, T, vocab_size)
        _save(recorder, "logits", logits)
        if kv_cache is not None:
            kv_cache.length += seq_len
        return logits


class DummyGPTModel(_GPTForward):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])

        # Use a placeholder for TransformerBlock
        self.trf_blocks = nn.Sequential(*[DummyTransformerBlock(cfg) for _ in range(cfg["n_layers"])])

        # Use a placeholder for LayerNorm
        self.final_norm = DummyLayerNorm(cfg["emb_dim"])

        # Converts each emb_dim vector to a row of vocab_size logits.
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)


# --- The real components -------------------------------------------------------------


class LayerNorm(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)  # biased, as GPT-2 was trained
        norm_x = (x - mean) / torch.sqrt(var + self.eps)
        return self.scale * norm_x + self.shift

    def fused(self, x):
        """forward() in one kernel, for generation's fast path: F.layer_norm also uses the
        biased variance with eps inside the square root, then scales and shifts."""
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


def _layer_norm_fused(norm, x):
    """The fast path's norm: fused for the course's LayerNorm; a placeholder returns x."""
    return norm.fused(x) if isinstance(norm, LayerNorm) else norm(x)


class GELU(nn.Module):
    """The tanh approximation GPT-2 was trained with."""

    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(cfg["emb_dim"], 4 * cfg["emb_dim"]),  # expand 4x
            GELU(),
            nn.Linear(4 * cfg["emb_dim"], cfg["emb_dim"]),  # and back
        )

    def forward(self, x, recorder=None):
        hidden = self.layers[1](self.layers[0](x))  # (B, T, 4*emb_dim)
        _save(recorder, "ff.hidden", hidden)
        return self.layers[2](hidden)

    def fused(self, x):
        """forward() for generation's fast path: GELU's tanh formula in one kernel (and
        F.linear(x, layer.weight, layer.bias), which is layer(x) without nn.Module's call)."""
        expand, _, project = self.layers
        hidden = F.gelu(F.linear(x, expand.weight, expand.bias), approximate="tanh")
        return F.linear(hidden, project.weight, project.bias)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # True above the diagonal: token i may not look at a later token j > i.
        # Stored as bool and left out of the state dict; it is derived, not learned.
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1),
            persistent=False,
        )
        # Not in the course: W_query, W_key and W_value keep their own initial values (and the
        # random draws are the course's), but their weights (and biases) are moved into one
        # block of memory, one after the other, so generation can multiply by all three at
        # once (see `_qkv`). Nothing is duplicated: the Linear layers are views of it.
        _stack_in_one_storage(self.W_query, self.W_key, self.W_value)

    def _heads(self, t, b, n):
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, n_heads, T, head_dim)

    def forward(self, x, recorder=None, kv_cache: KVCache | None = None, layer=0):
        if _fast_path(self, recorder, kv_cache):
            return self._generation_step(x, kv_cache, layer)
        b, num_tokens, d_in = x.shape
        keys = self._heads(self.W_key(x), b, num_tokens)
        queries = self._heads(self.W_query(x), b, num_tokens)
        values = self._heads(self.W_value(x), b, num_tokens)

        start = 0  # absolute position of the first new token
        if kv_cache is not None:
            keys, values = kv_cache.extend(layer, keys, values)
            start = keys.shape[2] - num_tokens
        attn_scores = queries @ keys.transpose(2, 3)  # (B, n_heads, T_new, T_all)
        _save(recorder, "att.scores", attn_scores)
        mask_bool = self.mask[start : start + num_tokens, : start + num_tokens]
        attn_scores = attn_scores.masked_fill(mask_bool, -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        _save(recorder, "att.weights", attn_weights)
        attn_weights = _drop(self.dropout, attn_weights, recorder)

        context_vec = (attn_weights @ values).transpose(1, 2)  # (B, T, n_heads, head_dim)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)  # heads side by side
        _save(recorder, "att.context", context_vec)
        return self.out_proj(context_vec)

    # --- Generation's fast path (see `_fast_path`): the same attention, fused -------------

    def _generation_step(self, x, kv_cache: KVCache, layer: int):
        b, num_tokens, _ = x.shape
        qkv = self._qkv(x).view(b, num_tokens, 3, self.num_heads, self.head_dim)
        queries, keys, values = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, n_heads, T, head_dim)
        keys, values = kv_cache.extend(layer, keys, values)
        start = keys.shape[2] - num_tokens  # absolute position of the first new token
        # softmax(Q K^T / sqrt(head_dim)) V with the causal mask, in one kernel. A single new
        # token may look at every cached one, so it needs no mask.
        attn_mask = None
        if num_tokens > 1:
            attn_mask = ~self.mask[start : start + num_tokens, : start + num_tokens]  # True = may attend
        context_vec = F.scaled_dot_product_attention(queries, keys, values, attn_mask=attn_mask)
        context_vec = context_vec.transpose(1, 2).reshape(b, num_tokens, self.d_out)  # heads side by side
        return F.linear(context_vec, self.out_proj.weight, self.out_proj.bias)  # = self.out_proj(...)

    def _qkv(self, x):
        """Queries, keys and values side by side, (B, T, 3 * d_out), in one matrix multiplication.

        Reading the three weight matrices in one pass is faster than in three. It needs them
        stacked in memory, as the constructor leaves them; if they no longer are (after
        `.to()`, `copy.deepcopy` or `load_state_dict(..., assign=True)` with separate
        tensors), the three projections are computed one by one, with the same result.
        """
        linears = (self.W_query, self.W_key, self.W_value)
        weight = _stacked([lin.weight for lin in linears])
        if weight is None:
            return torch.cat([lin(x) for lin in linears], dim=-1)
        bias = None
        if self.W_query.bias is not None:
            biases = [lin.bias for lin in linears]
            bias = _stacked(biases)
            bias = torch.cat(biases) if bias is None else bias  # 3 * d_out numbers: cheap
        return F.linear(x, weight, bias)


def _stack_in_one_storage(*linears: nn.Linear) -> None:
    """Make the linears' weights (and biases) consecutive views of one tensor, values unchanged."""
    with torch.no_grad():
        for name in ("weight", "bias"):
            params = [getattr(lin, name) for lin in linears]
            if params[0] is None:
                continue
            stacked = torch.cat(params)  # (n * d_out, d_in): the rows of each, one after another
            for lin, old, part in zip(linears, params, stacked.split([p.shape[0] for p in params])):
                setattr(lin, name, nn.Parameter(part, requires_grad=old.requires_grad))


def _stacked(tensors):
    """The tensors (of one shape) stacked along dim 0 as one, without copying, if memory
    holds them that way: contiguous, each starting where the previous one ends; else None."""
    first = tensors[0]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None  # autograd would credit the whole view's gradient to the first tensor
    end = first.data_ptr()
    for t in tensors:
        if t.data_ptr() != end or t.shape != first.shape or t.dtype != first.dtype or not t.is_contiguous():
            return None
        end += t.nbytes
    storage = first.untyped_storage()
    if end > storage.data_ptr() + storage.nbytes():
        return None  # adjacent addresses, but not one block of memory
    return first.as_strided((len(tensors) * first.shape[0], *first.shape[1:]), first.stride())


class PlaceholderSublayer(nn.Module):
    """Stands in for attention or feed-forward inside a real block.

    It adds nothing to the residual stream, so the shortcut carries x through unchanged:
    the block behaves as if the sublayer were not there. (Returning its input, like the
    seed's placeholders, would double x at every shortcut.)
    """

    def forward(self, x, recorder=None, kv_cache=None, layer=0):
        return torch.zeros_like(x)


class TransformerBlock(nn.Module):
    def __init__(self, cfg, parts=ALL_PARTS):
        super().__init__()
        if "attention" in parts:
            self.att = MultiHeadAttention(
                d_in=cfg["emb_dim"],
                d_out=cfg["emb_dim"],
                context_length=cfg["context_length"],
                num_heads=cfg["n_heads"],
                dropout=cfg["drop_rate"],
                qkv_bias=cfg["qkv_bias"],
            )
        else:
            self.att = PlaceholderSublayer()
        self.ff = FeedForward(cfg) if "feed_forward" in parts else PlaceholderSublayer()
        norm = LayerNorm if "layer_norm" in parts else DummyLayerNorm
        self.norm1 = norm(cfg["emb_dim"])
        self.norm2 = norm(cfg["emb_dim"])
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x, recorder=None, kv_cache=None, layer=0):
        if _fast_path(self, recorder, kv_cache):
            return self._generation_step(x, kv_cache, layer)
        shortcut = x
        x = self.norm1(x)
        _save(recorder, "norm1", x)
        x = self.att(x, recorder=recorder, kv_cache=kv_cache, layer=layer)
        _save(recorder, "att.out", x)
        x = _drop(self.drop_shortcut, x, recorder)
        x = x + shortcut  # shortcut connection around attention
        _save(recorder, "resid_mid", x)

        shortcut = x
        x = self.norm2(x)
        _save(recorder, "norm2", x)
        x = self.ff(x, recorder=recorder)
        _save(recorder, "ff.out", x)
        x = _drop(self.drop_shortcut, x, recorder)
        return x + shortcut  # shortcut connection around feed-forward

    def _generation_step(self, x, kv_cache: KVCache, layer: int):
        """forward() on generation's fast path: nothing to record, dropout off (so left out),
        fused LayerNorm and feed-forward kernels."""
        x = x + self.att(_layer_norm_fused(self.norm1, x), kv_cache=kv_cache, layer=layer)
        h = _layer_norm_fused(self.norm2, x)
        return x + (self.ff.fused(h) if isinstance(self.ff, FeedForward) else self.ff(h))


class GPTModel(_GPTForward):
    """The course's GPTModel. `parts` names the real components; the rest are placeholders.

    With every part real (the default) this is exactly the course's model; with none it
    computes what the seed's DummyGPTModel computes.
    """

    def __init__(self, cfg, parts=ALL_PARTS):
        super().__init__()
        parts = frozenset(parts)
        unknown = parts - ALL_PARTS
        if unknown:
            raise ValueError(f"unknown parts {sorted(unknown)}; choose from {list(PARTS)}")
        self.parts = parts
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg, parts) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"]) if "layer_norm" in parts else DummyLayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)
