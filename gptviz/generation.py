"""Turning logits back into text: the course's greedy loop, and a faster, sampling one.

`generate_text_simple` is the course's loop, kept exactly as chapter 4 writes it: every step
runs the whole (cropped) sequence through the model again.

`generate` produces the same tokens when greedy, but feeds the model one new token per step
and keeps every layer's keys and values in a `KVCache`. It can also sample: the logits of
each step go through `next_token_distribution` (temperature, then top-k, then top-p), the
same pure function the app's Generate page calls to show each stage, and a token is drawn
with `pick_next_token` from a `torch.Generator` the caller owns.

Two rules follow from the model being shared by every session of the app:
- nothing here calls `model.eval()` or `model.train()`; whoever builds the model puts it in
  eval mode once (see `build.build_model`), and dropout stays off from then on;
- nothing here draws from the global RNG; sampling uses only the generator passed in.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from .matmul import inference
from .models import KVCache

# Seed of the generator `generate` makes when sampling without one, so that the same
# call always returns the same text (every number the app shows is reproducible).
DEFAULT_SEED = 0


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """The course's greedy decoding: append the most likely next token, max_new_tokens times.

    idx is (batch, n_tokens); the context is cropped to the last `context_size` tokens.
    """
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # crop to the supported context
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]  # only the last position predicts the next token
        probas = torch.softmax(logits, dim=-1)  # (batch, vocab_size)
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)  # (batch, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (batch, n_tokens+1)
    return idx


# --- One step: logits -> distribution -> token -----------------------------------------


def check_sampling(temperature=0.0, top_k=None, top_p=None) -> None:
    """Raise a ValueError naming the first sampling setting that is out of range."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if not temperature >= 0 or temperature == float("inf"):  # also rejects NaN
        raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
            raise ValueError(f"top_k must be a whole number >= 1 or None, got {top_k!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 (or None to keep every token), got {top_k}")
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, numbers.Real):
            raise ValueError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (or None to keep every token), got {top_p}")


def next_token_distribution(logits, temperature=0.0, top_k=None, top_p=None) -> dict:
    """What one generation step does with the last position's logits, stage by stage.

    `logits` is a row of vocab_size logits, or a (batch, vocab_size) block of them, as a
    torch tensor or a numpy array; the arrays returned are of the same kind and shape.
    Pure: no randomness, nothing is modified.

    temperature > 0 (sampling):
      scaled_logits  logits / temperature (below 1 sharpens, above 1 flattens)
      top_k_mask     True for the top_k largest scaled logits (ties with the k-th are kept
                     too, as in the course and Hugging Face); all True if top_k is None
      top_p_mask     True for the tokens that also survive nucleus filtering: the smallest
                     set of most likely tokens (after top-k, renormalised) whose probability
                     adds up to at least top_p; never empty; equals top_k_mask if top_p is
                     None or 1
      filtered_logits  scaled_logits with -inf wherever top_p_mask is False
      probs          softmax(filtered_logits): the distribution the next token is drawn from
    temperature == 0 (greedy): the most likely token is taken. top-k and top-p cannot change
      that choice (both always keep the most likely token), so they are not applied: the
      masks are all True, scaled_logits and filtered_logits are the logits, and probs is
      1 at the argmax (the first one, on a tie, like torch.argmax) and 0 elsewhere.

    Also returned: greedy (bool), top_token (the most likely token's id, shape (..., 1): what
    greedy decoding picks), temperature, top_k, top_p, and logits (the input).
    """
    check_sampling(temperature, top_k, top_p)
    as_numpy = isinstance(logits, np.ndarray)
    logits = torch.from_numpy(logits) if as_numpy else torch.as_tensor(logits)
    if logits.ndim not in (1, 2) or logits.shape[-1] == 0:
        raise ValueError(f"logits must be (vocab_size,) or (batch, vocab_size), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        logits = logits.float()
    vocab_size = logits.shape[-1]
    greedy = temperature == 0

    if greedy:
        scaled = filtered = logits
        # Nothing is filtered: a read-only all-True view, not a vocab_size-long allocation.
        top_k_mask = top_p_mask = torch.ones((), dtype=torch.bool, device=logits.device).expand(logits.shape)
        top_token = logits.argmax(dim=-1, keepdim=True)
        probs = torch.zeros_like(logits).scatter_(-1, top_token, 1.0)
    else:
        scaled = logits / temperature
        if bool(torch.isposinf(scaled).any()) and not bool(torch.isposinf(logits).any()):
            raise ValueError(
                f"temperature {temperature!r} is too small: logits / temperature overflows; use 0 for greedy"
            )
        if top_k is None or top_k >= vocab_size:
            top_k_mask = torch.ones_like(scaled, dtype=torch.bool)
        else:
            kth_largest = torch.topk(scaled, top_k, dim=-1).values[..., -1:]  # (..., 1)
            top_k_mask = scaled >= kth_largest
        filtered = scaled.masked_fill(~top_k_mask, -torch.inf)
        if top_p is None or top_p >= 1:
            top_p_mask = top_k_mask
        else:
            probs_k = torch.softmax(filtered, dim=-1)
            sorted_probs, order = torch.sort(probs_k, dim=-1, descending=True)
            cumulative = sorted_probs.cumsum(dim=-1)
            before = torch.nn.functional.pad(cumulative[..., :-1], (1, 0))  # mass of the tokens ranked above
            keep_sorted = before < top_p  # keep until the kept mass reaches top_p
            keep_sorted[..., 0] = True  # the most likely token always stays
            keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
            top_p_mask = keep & top_k_mask
            filtered = filtered.masked_fill(~top_p_mask, -torch.inf)
        probs = torch.softmax(filtered, dim=-1)

    out = {
        "greedy": greedy,
        "top_token": top_token if greedy else scaled.argmax(dim=-1, keepdim=True),
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "logits": logits,
        "scaled_logits": scaled,
        "top_k_mask": top_k_mask,
        "top_p_mask": top_p_mask,
        "filtered_logits": filtered,
        "probs": probs,
    }
    if as_numpy:
        out = {k: v.contiguous().numpy() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    return out


def pick_next_token(dist: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token from a `next_token_distribution` result: (batch, 1), or (1,) for one row.

    Greedy takes the argmax and uses no randomness. Sampling draws one token from `probs`
    with `torch.multinomial`, from `generator` only (required: never the global RNG).
    """
    if dist["greedy"]:
        top = dist["top_token"]
        return torch.from_numpy(top) if isinstance(top, np.ndarray) else top
    probs = dist["probs"]
    probs = torch.from_numpy(probs) if isinstance(probs, np.ndarray) else probs
    if generator is None:
        raise ValueError("sampling needs a torch.Generator (pass generator=...); the global RNG is never used")
    return torch.multinomial(probs, 1, generator=generator)


# --- The generation loop ----------------------------------------------------------------


def _check_generate_args(model, idx, max_new_tokens, context_size, eos_id) -> None:
    if not isinstance(idx, torch.Tensor) or idx.ndim != 2 or idx.shape[1] == 0:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be a (batch, n_tokens) tensor of token ids with n_tokens >= 1, got {shape}")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
    if isinstance(context_size, bool) or not isinstance(context_size, numbers.Integral) or context_size < 1:
        raise ValueError(f"context_size must be a whole number >= 1, got {context_size!r}")
    pos_emb = getattr(model, "pos_emb", None)
    if isinstance(pos_emb, torch.nn.Embedding) and context_size > pos_emb.num_embeddings:
        raise ValueError(
            f"context_size {context_size} is longer than the model's context_length "
            f"{pos_emb.num_embeddings} (it has no position embedding beyond that)"
        )
    if eos_id is not None and (isinstance(eos_id, bool) or not isinstance(eos_id, numbers.Integral)):
        raise ValueError(f"eos_id must be a token id or None, got {eos_id!r}")


def generate(
    model,
    idx,
    max_new_tokens,
    context_size,
    temperature=0.0,
    top_k=None,
    top_p=None,
    eos_id=None,
    generator=None,
):
    """Append up to max_new_tokens tokens to idx (batch, n_tokens); return (batch, n_tokens + n_new).

    Greedy (temperature=0, the default) returns the tokens `generate_text_simple` returns,
    computed with a KV cache: the prompt is run through the model once (prefill), then each
    step feeds only the token just chosen, and attention reads every earlier token's keys
    and values from the cache instead of recomputing them. Only the last position's logits
    are computed (`last_only`): the others predict tokens already known. (The cached path
    runs the model's fused kernels, which add the same numbers in a different order, so
    logits agree to about 1e-6, not bit for bit; a tie that close between the two most
    likely tokens is the only way the choices could differ.) Every model works this way,
    also one without attention (the cache counts positions itself).

    Sampling (temperature > 0): each step's logits go through `next_token_distribution`
    (divide by temperature, keep the top_k largest, keep the top_p nucleus, softmax) and one
    token is drawn with torch.multinomial from `generator` alone. Without a generator, a
    fresh one seeded with DEFAULT_SEED (0) is used, so the same call gives the same text;
    pass your own `torch.Generator().manual_seed(s)` to choose the seed. The global RNG is
    never touched.

    The context window: the model's position embeddings are absolute (token i of the input
    gets pos_emb[i]), and every cached key and value was computed from a token plus the
    embedding of its position. Once the sequence is longer than context_size, the course
    crops it to the last context_size tokens, so every token moves one position to the left
    at every step, and every cached key and value is stale. So when the next token would not
    fit, the sequence is cropped to its last context_size tokens and a fresh cache is
    prefilled from them, exactly the input `generate_text_simple` gives the model; from then
    on each step costs a full pass over context_size tokens, as without a cache.

    eos_id: a sequence that emits it is finished; its later positions are filled with
    eos_id, and generation stops as soon as every sequence in the batch has emitted it
    (so the result may be shorter than n_tokens + max_new_tokens).

    Runs under torch.inference_mode and never changes the model's mode: put the model in
    eval mode once, beforehand (dropout would otherwise make greedy decoding random).
    """
    check_sampling(temperature, top_k, top_p)
    _check_generate_args(model, idx, max_new_tokens, context_size, eos_id)
    if temperature > 0 and generator is None:
        generator = torch.Generator(device=idx.device)
        generator.manual_seed(DEFAULT_SEED)

    with inference():
        out = _generate(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id, generator)
    # A tensor made under inference_mode cannot be used with autograd or modified in place
    # later; hand back an ordinary one.
    return out.clone()


def _generate(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id, generator):
    seq = idx.long()  # (B, T) everything so far; the result
    cache: KVCache | None = None
    finished = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device) if eos_id is not None else None
    next_ids = None

    for _ in range(max_new_tokens):
        if cache is not None and cache.length < context_size:
            # Decode: only the newest token goes through the model; its position is cache.length.
            logits = model(next_ids, kv_cache=cache, last_only=True)  # (B, 1, vocab_size)
        else:
            # Prefill (first step, or the window is full and has to slide: see the docstring).
            cache = KVCache()
            logits = model(seq[:, -context_size:], kv_cache=cache, last_only=True)  # (B, 1, vocab_size)
        logits = logits[:, -1, :]  # only the last position predicts the next token: (B, vocab_size)

        dist = next_token_distribution(logits, temperature, top_k, top_p)
        next_ids = pick_next_token(dist, generator)  # (B, 1)
        if finished is not None:
            next_ids = next_ids.masked_fill(finished.unsqueeze(1), eos_id)  # finished rows stay finished
            finished = finished | (next_ids[:, 0] == eos_id)
        seq = torch.cat((seq, next_ids), dim=1)  # (B, T+1)
        if finished is not None and bool(finished.all()):
            break
    return seq
