"""Generation one step at a time, with every stage of every choice kept for display.

The Generate page shows, for each new token, the last position's logits going through
temperature, top-k, top-p, softmax and the draw, and lets a learner overrule a step's
choice and continue from there. The model only supplies logits: `walk` takes a function
from a prefix of token ids to that prefix's next-token logits, so the app can cache those
per prefix and moving a slider re-runs the cheap pipeline, not the model.

Draws come from one `torch.Generator` seeded with `seed`, one draw per step, in order, as in
`generation.generate`: with no overrides the text equals `generate(...,
generator=torch.Generator().manual_seed(seed))` (greedy: `generate_text_simple`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from .generation import next_token_distribution, pick_next_token
from .matmul import inference
from .models import KVCache

N_CANDIDATES = 12  # candidates kept per step for display


@dataclass(frozen=True)
class Step:
    index: int
    prefix_len: int  # tokens the model saw for this step
    candidates: dict  # arrays over the N_CANDIDATES most likely tokens (by raw logit)
    drawn: int  # what the sampler picked
    chosen: int  # what the text continues with (drawn, unless the learner overruled it)
    chosen_prob: float  # probability of `chosen` in the final distribution
    chosen_rank: int  # 1 = most likely by logit
    kept: int  # tokens left after top-k and top-p

    @property
    def overruled(self) -> bool:
        return self.chosen != self.drawn


def top_ids(logits: np.ndarray, n: int) -> np.ndarray:
    """The ids of the n largest logits, largest first, ties by lower id: the first n of
    np.argsort(-logits, kind="stable") without sorting all 50,257 (7 ms a step, ten steps a rerun)."""
    if n >= len(logits) or np.isnan(logits).any():  # NaN: leave the ordering to the full sort
        return np.argsort(-logits, kind="stable")[:n]
    nth = np.partition(logits, len(logits) - n)[len(logits) - n]  # the n-th largest value
    above = np.flatnonzero(logits > nth)
    ties = np.flatnonzero(logits == nth)[: n - len(above)]  # equal to the n-th: lowest ids first
    ids = np.concatenate([above, ties])
    return ids[np.argsort(-logits[ids], kind="stable")]


def _candidates(dist: dict, extra: int, n: int) -> dict:
    logits = dist["logits"]
    order = top_ids(logits, n)
    if extra not in order:
        order = np.append(order, extra)
    return {
        "ids": order,
        "logits": logits[order],
        "scaled_logits": dist["scaled_logits"][order],
        "after_top_k": dist["top_k_mask"][order],
        "after_top_p": dist["top_p_mask"][order],
        "probs": dist["probs"][order],
    }


class PromptCaches:
    """Keys and values of recent prompts, shared by every session, bounded by bytes.

    A learner edits the end of a text far more often than its start, so a new prompt usually
    shares its first tokens with one seen before; their keys and values are the same (attention
    is causal) and only the rest goes through the model. `model_key` tells models apart.
    """

    def __init__(self, max_bytes: int, max_entries: int = 64):
        self.max_bytes = max_bytes
        self.max_entries = max_entries  # also bounds models without attention, whose caches hold no bytes
        self._items: OrderedDict = OrderedDict()  # (model_key, ids) -> KVCache, least recent first
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def take(self, model_key, ids: tuple) -> KVCache | None:
        """A copy of the cache of the longest start `ids` shares with a kept prompt, leaving at
        least its last token to compute (its logits are wanted); None if nothing is shared."""
        with self._lock:
            best, shared = None, 0
            for (key, kept), cache in self._items.items():
                if key == model_key:
                    n = _shared_start(kept, ids, limit=len(ids) - 1)
                    if n > shared:
                        best, shared = (key, kept), n
            if best is None:
                return None
            self._items.move_to_end(best)
            return self._items[best].copy(shared)

    def put(self, model_key, ids: tuple, cache: KVCache) -> None:
        """Keep a copy of `cache` (which holds exactly `ids`); a prompt larger than the whole
        budget is not kept."""
        key = (model_key, tuple(ids))
        kept = cache.copy(cache.length)
        with self._lock:
            if key in self._items or kept.nbytes > self.max_bytes:
                return
            self._items[key] = kept
            self._bytes += kept.nbytes
            while self._bytes > self.max_bytes or len(self._items) > self.max_entries:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes


def _shared_start(a: tuple, b: tuple, limit: int) -> int:
    """How many first tokens a and b have in common, at most `limit`."""
    n = 0
    for x, y in zip(a[:limit], b[:limit]):
        if x != y:
            break
        n += 1
    return n


class PrefixLogits:
    """Next-token logits of a growing prefix: what `walk` asks for, step after step.

    A step's prefix is the previous one plus the token just chosen, so only the new tokens
    go through the model; every earlier token's keys and values come from a KV cache (as in
    `generation.generate`). Asked for a prefix that does not extend the last one, it starts
    over. Past `context_length` the course crops the input to its last tokens, which moves
    every token to a new position: each such prefix is computed afresh, as
    `generate_text_simple` does. Not thread-safe: one per rerun (the model may be shared).
    """

    def __init__(self, model, context_length: int, prompts: PromptCaches | None = None, model_key=None):
        self.model = model
        self.context_length = context_length
        self.prompts = prompts  # where a new prompt's start may already be computed
        self.model_key = model_key
        self._cache: KVCache | None = None
        self._ids: tuple = ()  # the tokens whose keys and values the cache holds

    def __call__(self, ids) -> np.ndarray:
        ids = tuple(int(i) for i in ids)
        extends = self._cache is not None and len(self._ids) < len(ids) and ids[: len(self._ids)] == self._ids
        fits = len(ids) <= self.context_length
        fresh = not (extends and fits)
        if not fresh:
            new = ids[len(self._ids):]
        elif fits and self.prompts is not None and (shared := self.prompts.take(self.model_key, ids)):
            self._cache, new = shared, ids[shared.length:]
        else:
            self._cache, new = KVCache(), ids[-self.context_length:]
        with inference(rows=len(new)):
            logits = self.model(torch.tensor([new]), kv_cache=self._cache, last_only=True)[0, -1]
        self._ids = ids if fits else ()
        if not self._ids:
            self._cache = None  # a cropped window cannot be extended (see above)
        elif fresh and self.prompts is not None:
            self.prompts.put(self.model_key, ids, self._cache)  # before this walk extends it
        return logits.to(torch.float32).numpy().copy()


def walk(next_logits, prompt, steps: int, temperature=0.0, top_k=None, top_p=None, seed=123,
         picks: dict | None = None, eos_id: int | None = None, n_candidates: int = N_CANDIDATES) -> list[Step]:
    """Generate `steps` tokens after `prompt`; `picks` maps step index -> token id to use instead.

    `next_logits(tuple_of_ids)` returns a (vocab_size,) float array: the logits at the last
    position for that prefix (the app crops it to the context length and caches it).
    """
    return list(walk_steps(next_logits, prompt, steps, temperature, top_k, top_p, seed, picks, eos_id, n_candidates))


def walk_steps(next_logits, prompt, steps: int, temperature=0.0, top_k=None, top_p=None, seed=123,
               picks: dict | None = None, eos_id: int | None = None, n_candidates: int = N_CANDIDATES):
    """`walk`, one Step at a time as each is computed: the page shows the text growing."""
    picks = picks or {}
    generator = torch.Generator().manual_seed(seed)
    ids = list(prompt)
    for s in range(steps):
        logits = np.array(next_logits(tuple(ids)), dtype=np.float32)  # a writable copy: torch needs one
        dist = next_token_distribution(logits, temperature, top_k, top_p)
        drawn = int(pick_next_token(dist, generator if not dist["greedy"] else None).reshape(-1)[0])
        chosen = int(picks.get(s, drawn))
        if not 0 <= chosen < len(logits):
            chosen = drawn  # a stale or tampered pick: ignore it
        rank = int((logits > logits[chosen]).sum()) + 1
        yield Step(
            index=s, prefix_len=len(ids), candidates=_candidates(dist, chosen, n_candidates), drawn=drawn,
            chosen=chosen, chosen_prob=float(dist["probs"][chosen]), chosen_rank=rank,
            kept=int(np.count_nonzero(dist["top_p_mask"])),
        )
        ids.append(chosen)
        if eos_id is not None and chosen == eos_id:
            break


def parse_picks(raw: str | None, max_step: int, vocab_size: int) -> dict:
    """Overrules from a URL, "3:1234,5:99" -> {3: 1234, 5: 99}; anything malformed is dropped."""
    picks = {}
    for part in (raw or "").split(","):
        step, _, token = part.partition(":")
        if step.strip().isdigit() and token.strip().isdigit():
            s, t = int(step), int(token)
            if s < max_step and t < vocab_size:
                picks[s] = t
    return picks


def format_picks(picks: dict) -> str:
    return ",".join(f"{s}:{t}" for s, t in sorted(picks.items()))
