"""Generation, checked the way a learner (and a careful maintainer) would check it.

- The course's generate_text_simple prints the book's chapter 4 tokens under torch.manual_seed(123).
- gptviz.generate with temperature 0 gives exactly the course's tokens, also once the
  sequence outgrows the context and has to be cropped; its KV cache gives the
  full-recompute logits; and it agrees with transformers' GPT2LMHeadModel.generate on the
  same weights (loaded with gptviz.weights.load_gpt2).
- Sampling is reproducible from a torch.Generator and never touches the global RNG;
  top_k=1 and a tiny top_p are greedy; each filter keeps what transformers' warpers keep.
- eos stops early; bad arguments raise ValueErrors that say what is wrong.

The 124M model is built once; everything else uses tiny configs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from gptviz.config import GPT_CONFIG_124M
from gptviz.generation import generate, generate_text_simple, next_token_distribution, pick_next_token
from gptviz.models import DummyGPTModel, GPTModel, KVCache
from gptviz.tokenizer import get_tokenizer

# Chapter 4, section 4.7: torch.manual_seed(123); model = GPTModel(GPT_CONFIG_124M);
# model.eval(); generate_text_simple(model, encode("Hello, I am"), 6, 1024) prints these
# ids and this text (ch04/01_main-chapter-code/ch04.ipynb in rasbt/LLMs-from-scratch).
BOOK_IDS = [15496, 11, 314, 716, 27018, 24086, 47843, 30961, 42348, 7267]
BOOK_TEXT = "Hello, I am Featureiman Byeswickattribute argue"

# A small vocabulary keeps the many sampling steps fast (each sorts and samples a full
# row); the generation code does not depend on its size.
TINY = dict(GPT_CONFIG_124M, vocab_size=1000, context_length=16, emb_dim=32, n_heads=4, n_layers=2)


def build(cfg, seed=123, cls=GPTModel):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    return model.requires_grad_(False).eval()


def ids(n, batch=1, seed=0, vocab_size=TINY["vocab_size"]):
    return torch.randint(0, vocab_size, (batch, n), generator=torch.Generator().manual_seed(seed))


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # These models are tiny (or run a handful of steps): a second intra-op thread buys
    # nothing, and on a busy machine every op would wait for it to be scheduled.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return build(TINY)


@pytest.fixture(scope="module")
def course_model():
    return build(GPT_CONFIG_124M)


# --- The course's result -------------------------------------------------------------------


def test_generate_text_simple_prints_the_books_tokens(course_model):
    tokenizer = get_tokenizer()
    encoded = tokenizer.encode("Hello, I am")
    assert encoded == [15496, 11, 314, 716]
    idx = torch.tensor(encoded).unsqueeze(0)

    out = generate_text_simple(course_model, idx, max_new_tokens=6, context_size=1024)

    assert out.tolist() == [BOOK_IDS]
    assert tokenizer.decode(out.squeeze(0).tolist()) == BOOK_TEXT
    # The KV-cache generator gives the same tensor.
    cached = generate(course_model, idx, max_new_tokens=6, context_size=1024)
    assert torch.equal(cached, out) and cached.dtype == out.dtype


# --- Greedy: the same tokens as the course, with a KV cache ----------------------------------


@pytest.mark.parametrize(
    "prompt_len, batch, context_size, new",
    [
        (1, 1, 16, 15),  # fills the context exactly: never crops
        (4, 2, 16, 30),  # outgrows it: crop and re-prefill every step after the 12th
        (16, 1, 16, 5),  # the prompt fills the context: crops from the second step
        (40, 2, 16, 8),  # the prompt alone is longer than the context
        (10, 3, 5, 12),  # a context_size smaller than the model's
        (3, 1, 1, 6),  # context of one token: a bigram model
    ],
)
def test_greedy_generate_equals_generate_text_simple(tiny, prompt_len, batch, context_size, new):
    prompt = ids(prompt_len, batch, seed=prompt_len)
    expected = generate_text_simple(tiny, prompt, max_new_tokens=new, context_size=context_size)
    out = generate(tiny, prompt, max_new_tokens=new, context_size=context_size)
    assert out.shape == (batch, prompt_len + new)
    assert torch.equal(out, expected)


def test_greedy_ignores_top_k_and_top_p_and_needs_no_generator(tiny):
    prompt = ids(5)
    expected = generate_text_simple(tiny, prompt, 10, 16)
    assert torch.equal(generate(tiny, prompt, 10, 16, temperature=0, top_k=3, top_p=0.5), expected)


def test_kv_cache_logits_equal_full_recompute(tiny):
    seq = ids(16, batch=2, seed=7)
    with torch.inference_mode():
        full = tiny(seq)  # (2, 16, vocab)
        for pieces in ([4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 16, [5, 3, 8]):
            cache, start, cached = KVCache(), 0, []
            for size in pieces:
                cached.append(tiny(seq[:, start : start + size], kv_cache=cache))
                start += size
            assert cache.length == 16
            torch.testing.assert_close(torch.cat(cached, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "make",
    [
        DummyGPTModel,
        lambda cfg: GPTModel(cfg, parts={"feed_forward", "layer_norm"}),  # attention a placeholder
        lambda cfg: GPTModel(cfg, parts=()),
        lambda cfg: GPTModel(cfg, parts={"attention"}),
    ],
    ids=["skeleton", "no attention", "all placeholders", "only attention"],
)
def test_models_without_attention_generate_with_the_cache_too(make):
    """The cache counts tokens itself, so even a model that stores no keys and values (the
    seed's skeleton, attention as a placeholder) is fed one token per step, at the right
    position, and gives the course's tokens, also past the context (crop, new prefill)."""
    model = build(TINY, cls=make)
    fed = []
    hook = model.register_forward_pre_hook(lambda module, args: fed.append(args[0].shape[1]))
    try:
        prompt = ids(3, batch=2)
        out = generate(model, prompt, 20, 16)
    finally:
        hook.remove()
    assert torch.equal(out, generate_text_simple(model, prompt, 20, 16))
    # Prefill 3 tokens, one token per step until 16 fill the context, then a full window
    # (cropped: every position moves) per step.
    assert fed == [3] + [1] * 13 + [16] * 6


def test_generate_with_query_key_value_bias_and_with_separate_weights(tiny):
    """qkv_bias=True (as in GPT-2), and weights no longer in one block (deepcopy): the
    fast path's fused or fallback projection gives the course's tokens either way."""
    biased = build({**TINY, "qkv_bias": True})
    for model in (biased, copy.deepcopy(biased), copy.deepcopy(tiny)):
        prompt = ids(5, batch=2, seed=11)
        assert torch.equal(generate(model, prompt, 14, 16), generate_text_simple(model, prompt, 14, 16))


def test_matches_transformers_greedy_generate(tmp_path):
    from gptviz.weights import load_gpt2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reference = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=32)).eval()
    reference.save_pretrained(tmp_path)
    ours = load_gpt2(tmp_path)

    for prompt in (torch.tensor([[15496, 11, 314, 716]]), ids(6, batch=2, seed=3, vocab_size=50257)):
        new = 32 - prompt.shape[1]
        with torch.inference_mode():
            expected = reference.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                use_cache=True,
                max_new_tokens=new,
                min_new_tokens=new,  # a random model may say <|endoftext|>; don't stop
                pad_token_id=50256,
            )
        assert torch.equal(generate(ours, prompt, new, context_size=32), expected)


# --- Sampling ------------------------------------------------------------------------------


def test_same_generator_seed_gives_the_same_text(tiny):
    prompt = ids(4, batch=2)
    settings = dict(temperature=1.5, top_k=50, top_p=0.9)
    first = generate(tiny, prompt, 20, 16, generator=seeded(42), **settings)
    second = generate(tiny, prompt, 20, 16, generator=seeded(42), **settings)
    assert torch.equal(first, second)
    # Without a generator, a fresh one seeded 0 is used: the same call, the same text.
    default = generate(tiny, prompt, 20, 16, **settings)
    assert torch.equal(default, generate(tiny, prompt, 20, 16, **settings))
    assert torch.equal(default, generate(tiny, prompt, 20, 16, generator=seeded(0), **settings))


def test_different_seeds_give_different_texts(tiny):
    # At temperature 1.5 an untrained model's next token is spread over hundreds of
    # tokens: two seeds agreeing on 20 of them has negligible probability.
    prompt = ids(4)
    texts = {tuple(generate(tiny, prompt, 20, 16, temperature=1.5, generator=seeded(s))[0].tolist()) for s in range(5)}
    assert len(texts) == 5


def test_top_k_one_and_tiny_top_p_are_greedy(tiny):
    prompt = ids(6, batch=2)
    greedy = generate(tiny, prompt, 25, 16)
    assert torch.equal(generate(tiny, prompt, 25, 16, temperature=2.0, top_k=1, generator=seeded(1)), greedy)
    assert torch.equal(generate(tiny, prompt, 25, 16, temperature=2.0, top_p=1e-9, generator=seeded(1)), greedy)


@pytest.mark.parametrize("generator", [None, "seeded"])
def test_sampling_leaves_the_global_rng_alone(tiny, generator):
    before = torch.get_rng_state()
    generate(tiny, ids(4), 20, 16, temperature=1.0, top_k=100, top_p=0.95,
             generator=seeded(5) if generator else None)
    assert torch.equal(torch.get_rng_state(), before)


def test_sampling_follows_the_distribution():
    # Draws from pick_next_token land where next_token_distribution puts the mass.
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -30.0])
    dist = next_token_distribution(logits.expand(20000, -1), temperature=1.0, top_k=4)
    draws = pick_next_token(dist, seeded(0))[:, 0]
    counts = torch.bincount(draws, minlength=5).float() / len(draws)
    torch.testing.assert_close(counts, dist["probs"][0], atol=0.015, rtol=0)
    assert counts[4] == 0  # cut by top_k


# --- eos ------------------------------------------------------------------------------------


def test_eos_stops_when_every_sequence_has_emitted_it(tiny):
    prompt = ids(5)
    greedy = generate(tiny, prompt, 12, 16)[0, 5:].tolist()
    eos = greedy[3]
    first = greedy.index(eos)  # it may already appear before step 3
    out = generate(tiny, prompt, 12, 16, eos_id=eos)
    assert out[0, 5:].tolist() == greedy[: first + 1]  # stops right after emitting it


def test_eos_finished_rows_wait_for_the_others(tiny):
    prompt = torch.cat([ids(5, seed=1), ids(5, seed=2)])
    greedy = generate(tiny, prompt, 12, 16)
    row0, row1 = greedy[0, 5:].tolist(), greedy[1, 5:].tolist()
    eos = next(t for t in row0 if t not in row1)  # only the first row ever emits it
    out = generate(tiny, prompt, 12, 16, eos_id=eos)
    assert out.shape == greedy.shape  # the second row never finishes: no early stop
    k = row0.index(eos)
    assert out[0, 5:].tolist() == row0[: k + 1] + [eos] * (11 - k)  # then padded with eos
    assert out[1].tolist() == greedy[1].tolist()


# --- The pure step function --------------------------------------------------------------------


def test_next_token_distribution_by_hand():
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0], dtype=np.float32)
    dist = next_token_distribution(logits, temperature=0.5, top_k=3, top_p=0.9)
    assert isinstance(dist["probs"], np.ndarray)  # numpy in, numpy out
    np.testing.assert_allclose(dist["scaled_logits"], logits / 0.5)
    assert dist["top_k_mask"].tolist() == [True, True, True, False, False]
    # After top-k, softmax([4, 2, 1]) = [0.844, 0.114, 0.042]: 0.844 < 0.9, so the second
    # token is needed to reach 0.9, and then 0.958 >= 0.9, so the third is not.
    assert dist["top_p_mask"].tolist() == [True, True, False, False, False]
    expected = np.exp([4.0, 2.0]) / np.exp([4.0, 2.0]).sum()
    np.testing.assert_allclose(dist["probs"], [*expected, 0, 0, 0], rtol=1e-6)
    assert np.isneginf(dist["filtered_logits"][2:]).all()

    greedy = next_token_distribution(logits)
    assert greedy["greedy"] and greedy["probs"].tolist() == [1, 0, 0, 0, 0]


def test_top_p_keeps_at_least_one_token_and_top_p_one_keeps_all():
    logits = torch.tensor([[5.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert next_token_distribution(logits, 1.0, top_p=1e-6)["top_p_mask"].sum(-1).tolist() == [1, 1]
    assert next_token_distribution(logits, 1.0, top_p=1.0)["top_p_mask"].all()
    # Ties at the k-th value are kept, as in the course and transformers.
    assert next_token_distribution(logits, 1.0, top_k=1)["top_k_mask"].sum(-1).tolist() == [1, 3]


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.7, 50, 0.9), (1.3, None, 0.5), (1.0, 5, None), (2.0, 200, 0.99)])
def test_filters_keep_what_transformers_warpers_keep(temperature, top_k, top_p):
    logits = torch.randn(4, 50257, generator=seeded(3)) * 3
    dist = next_token_distribution(logits, temperature, top_k, top_p)
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k is not None:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p is not None:
        scores = TopPLogitsWarper(top_p)(None, scores)
    assert torch.equal(dist["top_p_mask"], torch.isfinite(scores))
    torch.testing.assert_close(dist["probs"], torch.softmax(scores, dim=-1))


# --- Arguments, and what generate must not do ---------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_k=2.5), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(context_size=0), "context_size"),
        (dict(context_size=17), "context_length 16"),
        (dict(idx=torch.tensor([1, 2, 3])), "idx"),
        (dict(idx=torch.zeros(1, 0, dtype=torch.long)), "idx"),
        (dict(idx=torch.ones(1, 3)), "integer"),
        (dict(eos_id="eos"), "eos_id"),
    ],
)
def test_bad_arguments_raise_clear_value_errors(tiny, kwargs, message):
    args = dict(idx=ids(3), max_new_tokens=2, context_size=16)
    with pytest.raises(ValueError, match=message):
        generate(tiny, **{**args, **kwargs})


def test_bad_sampling_settings_raise_in_the_step_function_too():
    with pytest.raises(ValueError, match="top_p"):
        next_token_distribution(torch.zeros(5), 1.0, top_p=0)
    with pytest.raises(ValueError, match="generator"):
        pick_next_token(next_token_distribution(torch.zeros(5), 1.0), generator=None)


def test_zero_new_tokens_returns_the_prompt(tiny):
    prompt = ids(4)
    out = generate(tiny, prompt, 0, 16)
    assert torch.equal(out, prompt) and out is not prompt


def test_generate_never_changes_the_models_mode(tiny, monkeypatch):
    # The app shares one model between sessions; generate must not call eval() or train().
    def refuse(*args, **kwargs):
        raise AssertionError("generate changed the shared model's mode")

    monkeypatch.setattr(tiny, "train", refuse)
    monkeypatch.setattr(tiny, "eval", refuse)
    generate(tiny, ids(3), 4, 16)
    generate(tiny, ids(3), 4, 16, temperature=1.0)
    assert tiny.training is False


def test_result_is_an_ordinary_tensor(tiny):
    out = generate(tiny, ids(3), 4, 16)
    assert not out.is_inference()
    out[0, 0] = 0  # usable outside inference mode


def test_a_temperature_so_small_that_scaling_overflows_is_refused():
    with pytest.raises(ValueError, match="too small"):
        next_token_distribution(torch.tensor([1.0, 2.0]), temperature=1e-45)
