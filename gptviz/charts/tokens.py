"""The Tokens page's builders: token chips (HTML), the token table, the batch as torch prints it.

Pure functions: token groups, ids and labels in; an HTML string, a DataFrame, a string or a
go.Figure out. Every piece of user text that reaches HTML goes through `html.escape` here,
so a typed `<script>` is shown as text, never run.
"""

from __future__ import annotations

import html
import math
import unicodedata

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..tokenizer import TokenGroup, show_whitespace, token_groups
from .common import layout, thin

MAX_SHOWN_TOKENS = 1024  # chips and table rows per batch row; GPT-2's whole context
# Pastel chip backgrounds that keep dark text readable, cycled over the groups of a row.
CHIP_COLORS = ("#fde2e4", "#dbeafe", "#dcfce7", "#fef3c7", "#ede9fe", "#cffafe", "#fce7f3", "#e5e7eb")

# torch's default print options (torch._tensor_str.PRINT_OPTS)
TORCH_THRESHOLD = 1000  # more elements than this: print only the edges
TORCH_EDGEITEMS = 3
TORCH_LINEWIDTH = 80


# --- the batch tensor, printed as torch prints it ---------------------------------------


def _summarized_values(a: np.ndarray, summarize: bool) -> np.ndarray:
    """The values torch sizes its columns by: only the printed edges when summarizing."""
    if summarize and a.shape[0] > 2 * TORCH_EDGEITEMS:
        a = np.concatenate([a[:TORCH_EDGEITEMS], a[-TORCH_EDGEITEMS:]])
    if a.ndim == 1:
        return a
    return np.concatenate([_summarized_values(row, summarize) for row in a])


def _vector_text(row: np.ndarray, indent: int, summarize: bool, width: int) -> str:
    items = [str(int(v)).rjust(width) for v in row]
    if summarize and len(items) > 2 * TORCH_EDGEITEMS:
        items = items[:TORCH_EDGEITEMS] + [" ..."] + items[-TORCH_EDGEITEMS:]
    per_line = max(1, math.floor((TORCH_LINEWIDTH - indent) / (width + 2)))
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _nested_text(a: np.ndarray, indent: int, summarize: bool, width: int) -> str:
    if a.ndim == 1:
        return _vector_text(a, indent, summarize, width)
    index = range(a.shape[0])
    if summarize and a.shape[0] > 2 * TORCH_EDGEITEMS:
        index = [*range(TORCH_EDGEITEMS), None, *range(a.shape[0] - TORCH_EDGEITEMS, a.shape[0])]
    slices = ["..." if i is None else _nested_text(a[i], indent + 1, summarize, width) for i in index]
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def torch_repr(token_ids) -> str:
    """`print(batch)` for an int64 tensor of ids, as torch writes it, without needing torch.

    Columns are right-aligned to the widest number printed, rows wrap at 80 characters, and
    tensors of more than 1000 elements show only 3 items at each edge, like torch's defaults.
    """
    a = np.asarray(token_ids, dtype=np.int64)
    if a.size == 0:
        shape = "" if a.ndim == 1 else f"size={tuple(a.shape)}, "
        return f"tensor([], {shape}dtype=torch.int64)"
    summarize = a.size > TORCH_THRESHOLD
    width = max(len(str(int(v))) for v in _summarized_values(a, summarize))
    indent = len("tensor(")
    return f"tensor({_nested_text(a, indent, summarize, width)})"


# --- token groups per batch row -------------------------------------------------------


def row_groups(text: str, n_tokens: int) -> list[TokenGroup]:
    """The token groups of `text`, cut after its first `n_tokens` tokens (the context limit).

    A character whose bytes the cut splits keeps only the tokens that made it in; its text
    is then a partial character, shown as bytes by `visible_text`.
    """
    groups, count = [], 0
    for group in token_groups(text):
        if count >= n_tokens:
            break
        keep = min(len(group.ids), n_tokens - count)
        if keep < len(group.ids):
            pieces = group.pieces[:keep]
            group = TokenGroup(group.ids[:keep], _bytes_label(b"".join(pieces)), pieces, group.start, group.start)
        groups.append(group)
        count += keep
    return groups


def _bytes_label(data: bytes) -> str:
    return "".join(f"<{b:02x}>" for b in data)


def visible_text(text: str) -> str:
    """Whitespace as ␣ ↵ ⇥, and invisible characters (zero-width joiner, controls) by code point."""
    shown = show_whitespace(text)
    return "".join(
        f"⟨U+{ord(c):04X}⟩" if unicodedata.category(c) in ("Cf", "Cc") else c for c in shown
    )


def piece_label(piece: bytes) -> str:
    """One token's bytes as text, or as hex bytes when they are part of a character."""
    try:
        return visible_text(piece.decode("utf-8"))
    except UnicodeDecodeError:
        return _bytes_label(piece)


# --- chips ---------------------------------------------------------------------------

CHIP_CSS = """<style>
.gv-row{display:flex;flex-wrap:wrap;gap:6px 3px;align-items:flex-start;margin:2px 0 10px 0}
.gv-chip{display:inline-flex;flex-direction:column;align-items:center;border-radius:6px;padding:3px 6px 2px;
 border:1px solid rgba(0,0,0,.12);color:#111;min-width:1.6em}
.gv-t{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:15px;white-space:pre;line-height:1.35}
.gv-i{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px;color:#555;line-height:1.2}
.gv-split{border:2px dashed #9a6700}
.gv-n{font-size:10px;color:#9a6700;line-height:1.1}
.gv-sp{background:#1f2937 !important;color:#fff;border:1px solid #000}
.gv-sp .gv-i{color:#d1d5db}
.gv-br{flex-basis:100%;height:0}
</style>"""


def _chip(group: TokenGroup, color: str) -> str:
    ids = " ".join(str(i) for i in group.ids)
    text = html.escape(visible_text(group.text))
    if group.special:
        return f'<span class="gv-chip gv-sp" title="special token"><span class="gv-t">{text}</span><span class="gv-i">{ids}</span></span>'
    title = html.escape(f"chars {group.start}-{group.end}: " + ", ".join(piece_label(p) for p in group.pieces), quote=True)
    if len(group.ids) > 1:
        return (
            f'<span class="gv-chip gv-split" style="background:{color}" title="{title}"><span class="gv-t">{text}</span>'
            f'<span class="gv-i">{ids}</span><span class="gv-n">{len(group.ids)} tokens</span></span>'
        )
    return f'<span class="gv-chip" style="background:{color}" title="{title}"><span class="gv-t">{text}</span><span class="gv-i">{ids}</span></span>'


def chips_html(rows: list[list[TokenGroup]]) -> str:
    """One flex row of coloured chips per batch row: the token's text above, its id(s) below.

    Groups of several tokens (a character split across tokens) get a dashed border and a
    count; `<|endoftext|>` is a dark chip; after a newline the row breaks, as the text does.
    """
    out = [CHIP_CSS]
    for groups in rows:
        chips = []
        for k, group in enumerate(groups[:MAX_SHOWN_TOKENS]):
            chips.append(_chip(group, CHIP_COLORS[k % len(CHIP_COLORS)]))
            if group.text.endswith("\n"):
                chips.append('<span class="gv-br"></span>')
        out.append('<div class="gv-row">' + "".join(chips) + "</div>")
    return "".join(out)


def split_note(groups: list[TokenGroup], limit: int = 8) -> str:
    """One plain-text line on the characters whose UTF-8 bytes BPE split over several tokens."""
    split = [g for g in groups if len(g.ids) > 1 and not g.special]
    if not split:
        return ""
    distinct = list(dict.fromkeys(
        f"{visible_text(g.text)} ({sum(len(p) for p in g.pieces)} bytes: {' '.join(map(str, g.ids))})" for g in split
    ))
    shown = distinct[:limit]
    more = f", and {len(distinct) - limit} more" if len(distinct) > limit else ""
    return (
        f"{len(split)} {'chips group' if len(split) > 1 else 'chip groups'} several tokens, because each token alone is only "
        f"part of a character's UTF-8 bytes: {', '.join(shown)}{more}."
    )


# --- table and stats --------------------------------------------------------------------


def token_table(rows: list[list[TokenGroup]]) -> pd.DataFrame:
    """One line per token: batch row, position, id, piece, raw bytes in hex, character span."""
    records = []
    for r, groups in enumerate(rows):
        position = 0
        for group in groups:
            for token_id, piece in zip(group.ids, group.pieces):
                if position < MAX_SHOWN_TOKENS:
                    records.append({
                        "row": r, "position": position, "id": token_id, "piece": piece_label(piece),
                        "bytes (hex)": piece.hex(" "), "chars": f"{group.start}-{group.end}",
                    })
                position += 1
    columns = ["row", "position", "id", "piece", "bytes (hex)", "chars"]
    return pd.DataFrame.from_records(records, columns=columns)


def chars_per_token(text: str, n_tokens: int) -> float:
    return len(text) / n_tokens if n_tokens else 0.0


def token_id_bars(token_ids, labels: list[list[str]]) -> go.Figure:
    """Bar chart of the token ids by position, one colour per batch row.

    GPT-2 numbers merged pieces in the order BPE learned them, so a low id was merged early:
    a frequent piece. Rare words split into pieces; long texts are thinned evenly.
    """
    ids = np.asarray(token_ids, dtype=np.int64).reshape(len(labels), -1)
    B, T = ids.shape
    keep = thin(T, 2000)
    bars = [
        dict(
            type="bar", x=keep, y=ids[r, keep], name=f"row {r}", customdata=[labels[r][i] for i in keep],
            hovertemplate="position %{x}<br>id %{y}<br>piece %{customdata}<extra>row " + str(r) + "</extra>",
        )
        for r in range(B)
    ]
    note = "" if len(keep) == T else f" (showing {len(keep)} of {T} positions, evenly spaced)"
    return go.Figure(bars, layout(
        f"Token ids of batch {B} x {T}: low ids were merged early (frequent pieces){note}", 320,
        xaxis={"title": {"text": f"position in the row (0 .. {T - 1})"}},
        yaxis={"title": {"text": "token id (0 .. 50256)"}, "range": [0, 50257]},
        barmode="group", legend={"orientation": "h", "y": 1.02, "x": 1, "xanchor": "right", "yanchor": "bottom"},
    ))
