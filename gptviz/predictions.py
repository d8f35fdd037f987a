"""From logits to next-token predictions, in numpy: softmax with temperature, top-k, ranks.

The last step of chapter 4: `out_head` gives every position a row of vocab_size logits, and

    probas = torch.softmax(logits, dim=-1)
    idx_next = torch.argmax(probas, dim=-1, keepdim=True)

turns the last row into the next token. Position t's row scores every candidate for token
t + 1. Everything here works on the last axis of a (..., vocab_size) array, computes in
float64 and never changes its input. A (1024, 50257) row block is 200 MB in float32, so
the softmax normaliser is computed a few rows at a time, and pages reduce logits (top-k,
chosen columns, vocabulary buckets) before anything is drawn.

Also here: `format_logits`, which prints a logits array exactly as `print(logits)` does
in the course (torch's summarised repr), so the page can show the seed's output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

ROWS_PER_CHUNK = 64  # float64 rows of 50257 at a time: about 25 MB of scratch memory
MAX_READABLE_COLUMNS = 40
MAX_BUCKETS = 2000


# --- softmax with temperature -----------------------------------------------------------


def _check_temperature(temperature) -> float:
    temperature = float(temperature)
    if not temperature >= 0 or math.isinf(temperature):  # also rejects NaN
        raise ValueError(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}")
    return temperature


def _rows(logits) -> np.ndarray:
    """The logits as (rows, vocab_size): every leading axis is a row."""
    logits = np.asarray(logits)
    if logits.ndim == 0 or logits.shape[-1] == 0:
        raise ValueError(f"logits must be (..., vocab_size) with vocab_size >= 1, got shape {logits.shape}")
    return logits.reshape(-1, logits.shape[-1])


def _chunks(rows: np.ndarray):
    """(start, block) over a (rows, vocab_size) array, a few rows at a time to bound scratch memory."""
    for start in range(0, len(rows), ROWS_PER_CHUNK):
        yield start, rows[start : start + ROWS_PER_CHUNK]


def log_normalizer(logits, temperature: float = 1.0) -> np.ndarray:
    """log(sum(exp(logits / temperature))) over the last axis, in float64: shape logits.shape[:-1].

    Stable: the row maximum is subtracted before exp, so no logit overflows, at any
    temperature > 0. (Temperature 0 has no softmax, only its limit: see probabilities_of.)
    """
    if _check_temperature(temperature) == 0:
        raise ValueError("temperature 0 is the greedy limit (argmax): there is no normaliser")
    rows = _rows(logits)
    out = np.empty(len(rows))
    scratch = np.empty((min(len(rows), ROWS_PER_CHUNK), rows.shape[-1]))  # float64, reused by every chunk
    for start, block in _chunks(rows):
        peak = block.max(axis=-1, keepdims=True)
        shifted = scratch[: len(block)]
        np.subtract(block, peak, out=shifted, dtype=np.float64)  # exact: float32 values in float64
        if temperature != 1:
            shifted /= temperature
        # torch's vectorised float64 exp, in place on the same memory: 2.5x numpy's on this
        # server's CPU (the Predictions page does this for every position on every rerun).
        torch.from_numpy(shifted).exp_()
        out[start : start + len(block)] = peak[:, 0].astype(np.float64) / temperature + np.log(shifted.sum(axis=-1))
    return out.reshape(np.shape(logits)[:-1])


def probabilities_of(logits, ids, temperature: float = 1.0, normalizer=None) -> np.ndarray:
    """softmax(logits / temperature) at the columns `ids` (..., n) only, without the full softmax.

    `normalizer` is `log_normalizer(logits, temperature)` when already computed. Temperature
    0 gives the greedy limit: 1 for the first maximum of each row, 0 elsewhere.
    """
    temperature = _check_temperature(temperature)
    logits = np.asarray(logits)
    ids = np.asarray(ids)
    if temperature == 0:
        return (ids == logits.argmax(axis=-1)[..., None]).astype(np.float64)
    picked = np.take_along_axis(logits, ids, axis=-1).astype(np.float64)
    if normalizer is None:
        normalizer = log_normalizer(logits, temperature)
    return np.exp(picked / temperature - np.asarray(normalizer)[..., None])


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) over the last axis, float64, same shape as logits.

    Below 1 the temperature sharpens the distribution, above 1 it flattens it; 0 is its
    limit, argmax (one-hot). Use `probabilities_of` for a few columns of big arrays.
    """
    logits = np.asarray(logits)
    all_ids = np.broadcast_to(np.arange(logits.shape[-1]), logits.shape)
    return probabilities_of(logits, all_ids, temperature)


# --- top-k, ranks and the greedy next token ----------------------------------------------


@dataclass(frozen=True)
class TopK:
    """The k most likely next tokens at each position, most likely first: each (..., k)."""

    ids: np.ndarray  # int64 token ids
    logits: np.ndarray  # float32, as out_head produced them
    probs: np.ndarray  # float64 probabilities at the chosen temperature


def _top_ids(rows: np.ndarray, k: int) -> np.ndarray:
    """(rows, k) ids of the k largest logits of each row, largest first, ties by id."""
    vocab = rows.shape[-1]
    out = np.empty((len(rows), k), dtype=np.int64)
    for start, block in _chunks(rows):
        ids = np.argpartition(block, vocab - k, axis=-1)[:, vocab - k :] if k < vocab else np.indices(block.shape)[1]
        values = np.take_along_axis(block, ids, axis=-1)
        order = np.lexsort((ids, -values), axis=-1)  # by logit descending, then by id
        out[start : start + len(block)] = np.take_along_axis(ids, order, axis=-1)
    return out


def top_k(logits, k: int, temperature: float = 1.0, normalizer=None) -> TopK:
    """Like torch.topk(logits, k): the k largest logits of each row, in descending order.

    Temperature never changes the order (dividing by a positive number keeps it), only the
    probabilities. Ties are ordered by token id. k is clamped to [1, vocab_size].
    """
    logits = np.asarray(logits)
    k = min(max(int(k), 1), logits.shape[-1])
    ids = _top_ids(_rows(logits), k).reshape(*logits.shape[:-1], k)
    return TopK(
        ids=ids,
        logits=np.take_along_axis(logits, ids, axis=-1),
        probs=probabilities_of(logits, ids, temperature, normalizer),
    )


def ranks_of(logits, ids) -> np.ndarray:
    """1-based rank of token ids[...] in its row of logits (1 = the argmax), ties counted in its favour."""
    logits = np.asarray(logits)
    own = np.take_along_axis(logits, np.asarray(ids)[..., None], axis=-1).reshape(-1, 1)
    ranks = np.empty(len(own), dtype=np.int64)
    for start, block in _chunks(_rows(logits)):
        ranks[start : start + len(block)] = (block > own[start : start + len(block)]).sum(axis=-1) + 1
    return ranks.reshape(logits.shape[:-1])


@dataclass(frozen=True)
class Continuations:
    """How the model rated the token the text really continues with, at each position: (T,).

    The last position has no next token in the text: its rank is 0 and its p and logit 0.
    """

    ids: np.ndarray  # the token at t + 1 (-1 at the last position)
    ranks: np.ndarray  # 1 = the model's top choice
    probs: np.ndarray  # softmax(logits / temperature) of that token
    logits: np.ndarray


def continuations(logits, token_ids, temperature: float = 1.0, normalizer=None) -> Continuations:
    """Rank, probability and logit of token t + 1 in row t, for (T, vocab_size) logits of T token_ids."""
    logits = np.asarray(logits)
    token_ids = np.asarray(token_ids, dtype=np.int64)
    n = len(token_ids)
    ids, ranks, probs, values = np.full(n, -1), np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.float32)
    if n > 1:
        normalizer = None if normalizer is None else np.asarray(normalizer)[:-1]
        ids[:-1] = token_ids[1:]
        ranks[:-1] = ranks_of(logits[:-1], token_ids[1:])
        probs[:-1] = probabilities_of(logits[:-1], token_ids[1:, None], temperature, normalizer)[:, 0]
        values[:-1] = logits[np.arange(n - 1), token_ids[1:]]
    return Continuations(ids, ranks, probs, values)


def greedy_next_token(logits) -> np.ndarray:
    """The course's greedy step on the last position: argmax of softmax(logits[..., -1, :]).

    logits (B, T, V) gives (B, 1) token ids, like `idx_next` in chapter 4.
    """
    last = np.asarray(logits)[..., -1, :]
    probas = softmax(last)  # as the course does; softmax keeps the order, so this is argmax(logits)
    return probas.argmax(axis=-1)[..., None]


# --- columns worth drawing ------------------------------------------------------------------


def readable_columns(top: TopK, cap: int = MAX_READABLE_COLUMNS) -> np.ndarray:
    """Vocabulary columns for a heatmap a person can read: the union of every position's top-k.

    (T, k) TopK in. When the union holds more than `cap` tokens, the ones with the highest
    probability anywhere win. Columns come ordered by the position where each is most
    likely (then by that probability), so the heatmap reads top-left to bottom-right.
    """
    ids = top.ids.reshape(-1, top.ids.shape[-1])
    probs = top.probs.reshape(ids.shape)
    positions = np.broadcast_to(np.arange(len(ids))[:, None], ids.shape)
    best_prob: dict[int, float] = {}
    best_pos: dict[int, int] = {}
    for token, p, t in zip(ids.ravel().tolist(), probs.ravel().tolist(), positions.ravel().tolist()):
        if p > best_prob.get(token, -1.0):
            best_prob[token], best_pos[token] = p, t
    kept = sorted(best_prob, key=lambda token: -best_prob[token])[: max(1, int(cap))]
    kept.sort(key=lambda token: (best_pos[token], -best_prob[token]))
    return np.array(kept, dtype=np.int64)


@dataclass(frozen=True)
class VocabBuckets:
    """The whole vocabulary squeezed into at most MAX_BUCKETS columns."""

    maxima: np.ndarray  # (..., n_buckets) float32: the largest logit in each bucket
    starts: np.ndarray  # (n_buckets,) first token id of each bucket
    width: int  # token ids per bucket (the last one may hold fewer)


def vocab_buckets(logits, max_columns: int = MAX_BUCKETS) -> VocabBuckets:
    """Split the vocabulary into equal runs of ids and keep each run's largest logit.

    The maximum, not the mean: a strongly predicted token stays visible as a peak, where
    averaging ~25 random logits would blur every row to the same grey.
    """
    logits = np.asarray(logits)
    vocab = logits.shape[-1]
    width = max(1, math.ceil(vocab / max(1, int(max_columns))))
    starts = np.arange(0, vocab, width)
    maxima = np.maximum.reduceat(logits, starts, axis=-1).astype(np.float32)
    return VocabBuckets(maxima, starts, width)


# --- printing logits as the course does ---------------------------------------------------
# A port of torch/_tensor_str.py for real arrays, with torch's default print options.

PRECISION, THRESHOLD, EDGEITEMS, LINEWIDTH = 4, 1000, 3, 80


def _summarized(array: np.ndarray) -> np.ndarray:
    """The values torch looks at to choose a format: the first and last EDGEITEMS of each axis."""
    if array.ndim == 0:
        return array
    if array.shape[0] > 2 * EDGEITEMS:
        array = np.concatenate([array[:EDGEITEMS], array[-EDGEITEMS:]])
    return np.stack([_summarized(a) for a in array]) if array.ndim > 1 else array


class _Formatter:
    """torch's _Formatter: integer mode, scientific mode and a common width for all values."""

    def __init__(self, values: np.ndarray):
        self.floating = np.issubdtype(values.dtype, np.floating)
        self.int_mode, self.sci_mode, self.width = True, False, 1
        flat = values.reshape(-1)
        if not self.floating:
            self.width = max([1] + [len(str(v)) for v in flat.tolist()])
            return
        finite = flat[np.isfinite(flat) & (flat != 0)].tolist()
        if not finite:
            return
        magnitudes = [abs(v) for v in finite]
        low, high = min(magnitudes), max(magnitudes)
        self.int_mode = all(v == math.ceil(v) for v in finite)
        self.sci_mode = high / low > 1000.0 or high > 1.0e8 or low < 1.0e-4
        if self.sci_mode:
            self.width = max(len(f"{v:.{PRECISION}e}") for v in finite)
        elif self.int_mode:
            self.width = max(len(f"{v:.0f}") + 1 for v in finite)
        else:
            self.width = max(len(f"{v:.{PRECISION}f}") for v in finite)

    def format(self, value) -> str:
        if not self.floating:
            text = str(value)
        elif self.sci_mode:
            text = f"{value:{self.width}.{PRECISION}e}"
        elif self.int_mode:
            text = f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")
        else:
            text = f"{value:.{PRECISION}f}"
        return " " * (self.width - len(text)) + text


def _vector_text(vector: np.ndarray, indent: int, summarize: bool, formatter: _Formatter) -> str:
    per_line = max(1, math.floor((LINEWIDTH - indent) / (formatter.width + 2)))
    if summarize and len(vector) > 2 * EDGEITEMS:
        items = [formatter.format(v) for v in vector[:EDGEITEMS].tolist()] + [" ..."]
        items += [formatter.format(v) for v in vector[-EDGEITEMS:].tolist()]
    else:
        items = [formatter.format(v) for v in vector.tolist()]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _array_text(array: np.ndarray, indent: int, summarize: bool, formatter: _Formatter) -> str:
    if array.ndim == 1:
        return _vector_text(array, indent, summarize, formatter)
    if summarize and array.shape[0] > 2 * EDGEITEMS:
        picked = [*range(EDGEITEMS), None, *range(len(array) - EDGEITEMS, len(array))]
    else:
        picked = list(range(array.shape[0]))
    slices = ["..." if i is None else _array_text(array[i], indent + 1, summarize, formatter) for i in picked]
    return "[" + ("," + "\n" * (array.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def format_tensor(array, grad_fn: str | None = None) -> str:
    """What `print(torch.tensor(array))` shows (float32 arrays as torch's default float).

    `grad_fn` adds torch's suffix, e.g. "UnsafeViewBackward0" as the course's model gives.
    """
    array = np.asarray(array)
    prefix = "tensor("
    indent = len(prefix)
    if array.size == 0:
        body = "[]"
    elif array.ndim == 0:
        body = _Formatter(array).format(array.item())
    else:
        summarize = array.size > THRESHOLD
        formatter = _Formatter(_summarized(array) if summarize else array)
        body = _array_text(array, indent, summarize, formatter)
    text = prefix + body
    if grad_fn:  # torch's _add_suffixes: a new line when the suffix would pass LINEWIDTH
        suffix = f"grad_fn=<{grad_fn}>"
        last_line = len(text) - text.rfind("\n") + 1
        text += (",\n" + " " * indent if last_line + len(suffix) + 2 > LINEWIDTH else ", ") + suffix
    return text + ")"


def format_logits(logits, grad_fn: str | None = "UnsafeViewBackward0") -> str:
    """The seed's two prints: `print("Output shape:", logits.shape)` and `print(logits)`."""
    shape = ", ".join(str(n) for n in np.shape(logits))
    return f"Output shape: torch.Size([{shape}])\n{format_tensor(logits, grad_fn)}"
