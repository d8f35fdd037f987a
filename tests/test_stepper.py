"""The Generate page's step-by-step walk equals the course's generation, and overrules work."""

import numpy as np
import pytest
import torch

from gptviz import GPT_CONFIG_124M, PRESETS, ModelSpec, build_model, config_key, encode, trace
from gptviz.generation import generate, generate_text_simple
from gptviz import stepper
from gptviz.models import KVCache
from gptviz.stepper import PrefixLogits, format_picks, parse_picks, walk

TINY = PRESETS["tiny (teaching)"]


@pytest.fixture(scope="module")
def tiny_gpt():
    return build_model(ModelSpec(kind="GPTModel", config=config_key(TINY), seed=7)).model


def last_logits(model):
    return lambda ids: trace(model, ids[-TINY["context_length"]:], keep=("logits",))["logits"][0, -1]


@pytest.mark.parametrize("kind, parts", [("GPTModel", None), ("DummyGPTModel", None),
                                         ("GPTModel", ("feed_forward", "layer_norm")), ("GPTModel", ("attention",))])
def test_prefix_logits_equal_a_full_forward_pass_of_each_prefix(kind, parts):
    """The KV-cached logits of a growing prefix equal the course's forward pass over the whole
    (cropped) prefix, for every kind of model, also once the window slides and after a jump."""
    spec = ModelSpec(kind=kind, config=config_key(TINY), seed=3, **({"parts": frozenset(parts)} if parts else {}))
    model = build_model(spec).model
    full = last_logits(model)
    decoder = PrefixLogits(model, TINY["context_length"])
    ids = encode("word " * 58)[:58]  # context 64: the window slides after 6 steps
    for step in range(10):
        got = decoder(ids)
        np.testing.assert_allclose(got, full(ids), atol=2e-5, rtol=0, err_msg=f"{kind} {parts}, step {step}")
        ids = [*ids, int(np.argmax(got))]
    for other in (ids[:20], [5, 6, 7], ids[:21]):  # a prefix that does not extend the last one, then one that does
        np.testing.assert_allclose(decoder(other), full(other), atol=2e-5, rtol=0)


def test_greedy_walk_equals_generate_text_simple(tiny_gpt):
    prompt = encode("Every effort moves you")
    steps = walk(last_logits(tiny_gpt), prompt, 12)
    expected = generate_text_simple(tiny_gpt, torch.tensor([prompt]), 12, TINY["context_length"])[0, len(prompt):]
    assert [s.chosen for s in steps] == expected.tolist()
    assert all(s.chosen_rank == 1 and s.chosen_prob == 1.0 for s in steps)


def test_walk_steps_computes_each_step_only_when_asked_for(tiny_gpt):
    """The page draws the text between steps: step k's logits are computed when step k is
    taken from the generator, not before; and the steps equal walk's."""
    prompt = encode("Every effort moves you")
    asked = []
    logits = last_logits(tiny_gpt)
    steps = stepper.walk_steps(lambda ids: asked.append(len(ids)) or logits(ids), prompt, 5, temperature=0.8, seed=3)
    assert asked == []
    first = next(steps)
    assert asked == [len(prompt)]
    rest = list(steps)
    assert asked == [len(prompt) + k for k in range(5)]
    expected = walk(last_logits(tiny_gpt), prompt, 5, temperature=0.8, seed=3)
    assert [(s.drawn, s.chosen_prob, s.kept) for s in [first, *rest]] == [(s.drawn, s.chosen_prob, s.kept) for s in expected]


def test_greedy_walk_crops_to_the_context_like_the_course(tiny_gpt):
    prompt = encode("word " * 60)[:60]  # context is 64: the window slides after 4 steps
    steps = walk(last_logits(tiny_gpt), prompt, 8)
    expected = generate_text_simple(tiny_gpt, torch.tensor([prompt]), 8, TINY["context_length"])[0, 60:]
    assert [s.chosen for s in steps] == expected.tolist()


def test_sampled_walk_equals_generate_with_the_same_seed(tiny_gpt):
    prompt = encode("The cat sat")
    steps = walk(last_logits(tiny_gpt), prompt, 10, temperature=1.3, top_k=50, top_p=0.95, seed=42)
    expected = generate(
        tiny_gpt, torch.tensor([prompt]), 10, TINY["context_length"], temperature=1.3, top_k=50, top_p=0.95,
        generator=torch.Generator().manual_seed(42),
    )[0, len(prompt):]
    assert [s.chosen for s in steps] == expected.tolist()
    assert any(s.chosen_rank > 1 for s in steps), "sampling at T=1.3 should not always take the argmax"
    for s in steps:
        kept = s.candidates["after_top_p"]
        assert np.all(s.candidates["probs"][~kept] == 0)
        assert s.kept <= 50


def test_an_overrule_changes_that_step_and_what_follows(tiny_gpt):
    prompt = encode("Hello")
    free = walk(last_logits(tiny_gpt), prompt, 6)
    forced = walk(last_logits(tiny_gpt), prompt, 6, picks={2: 50256 - 1})
    assert [s.chosen for s in forced[:2]] == [s.chosen for s in free[:2]]
    assert forced[2].chosen == 50255 and forced[2].overruled and forced[2].drawn == free[2].drawn
    assert forced[3].prefix_len == len(prompt) + 3


def test_the_end_of_text_token_stops_the_walk(tiny_gpt):
    steps = walk(last_logits(tiny_gpt), encode("Hi"), 10, picks={1: 50256}, eos_id=50256)
    assert len(steps) == 2 and steps[-1].chosen == 50256


def test_picks_from_a_link_are_parsed_and_malformed_ones_dropped():
    assert parse_picks("3:1234,5:99", 10, 50257) == {3: 1234, 5: 99}
    assert parse_picks("x:y,3:,:4,2:-1,11:5,1:99999999,,", 10, 50257) == {}
    assert parse_picks(None, 10, 50257) == {}
    assert format_picks({5: 99, 3: 1234}) == "3:1234,5:99"


def test_seed_model_greedy_text_matches_the_course():
    """The 124M skeleton in eval mode, as generate_text_simple runs it after model.eval()."""
    built = build_model(ModelSpec(config=config_key(GPT_CONFIG_124M)))
    prompt = encode("Every effort moves you")
    steps = walk(lambda ids: trace(built.model, ids, keep=("logits",))["logits"][0, -1], prompt, 4)
    torch.manual_seed(123)
    from gptviz import DummyGPTModel

    model = DummyGPTModel(GPT_CONFIG_124M).eval()
    expected = generate_text_simple(model, torch.tensor([prompt]), 4, 1024)[0, len(prompt):]
    assert [s.chosen for s in steps] == expected.tolist()


@pytest.mark.parametrize("n", [1, 5, 12, 99, 100, 150])
def test_top_ids_is_the_head_of_the_stable_full_sort(n):
    # Many ties, also at the n-th value, and negative zeros: the order must be argsort's exactly.
    rng = np.random.default_rng(n)
    logits = rng.integers(-3, 4, size=100).astype(np.float32)
    logits[rng.integers(0, 100, size=5)] = -0.0
    expected = np.argsort(-logits, kind="stable")[:n]
    np.testing.assert_array_equal(stepper.top_ids(logits, n), expected)


def test_top_ids_with_nan_falls_back_to_the_full_sort():
    logits = np.array([1.0, np.nan, 3.0, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(stepper.top_ids(logits, 2), np.argsort(-logits, kind="stable")[:2])


# --- a new prompt starts from the keys and values of a recent one -------------------------


class CountingModel(torch.nn.Module):
    """Wraps a model and records how many tokens each forward call is fed."""

    def __init__(self, model):
        super().__init__()
        self.model, self.fed = model, []

    def forward(self, idx, **kwargs):
        self.fed.append(idx.shape[1])
        return self.model(idx, **kwargs)


@pytest.mark.parametrize("kind, parts", [("GPTModel", None), ("DummyGPTModel", None), ("GPTModel", ("feed_forward",))])
def test_a_prompt_sharing_its_start_with_a_recent_one_computes_only_the_rest(kind, parts):
    spec = ModelSpec(kind=kind, config=config_key(TINY), seed=5, **({"parts": frozenset(parts)} if parts else {}))
    model = build_model(spec).model
    full = last_logits(model)
    prompts = stepper.PromptCaches(max_bytes=2**24)
    counting = CountingModel(model)
    first = encode("Every effort moves you")
    edits = [
        (first + encode(" forward"), len(first)),  # a word typed at the end: only it is new
        (first[:-1] + encode(" us"), len(first) - 1),  # the last word changed
        (first, len(first) - 1),  # the same prompt again: its last token is still fed, for its logits
        (encode("A different start"), 0),  # nothing shared: the whole prompt
    ]
    PrefixLogits(counting, TINY["context_length"], prompts, spec)(first)
    for ids, shared in edits:
        counting.fed.clear()
        decoder = PrefixLogits(counting, TINY["context_length"], prompts, spec)
        np.testing.assert_allclose(decoder(ids), full(ids), atol=2e-5, rtol=0)
        assert counting.fed == [len(ids) - shared], (ids, shared)
        step = [*ids, 7]  # and the walk extends it as before
        np.testing.assert_allclose(decoder(step), full(step), atol=2e-5, rtol=0)


def test_kept_prompts_are_copies_and_models_are_kept_apart(tiny_gpt):
    prompts = stepper.PromptCaches(max_bytes=2**24)
    ids = encode("Every effort moves you")
    decoder = PrefixLogits(tiny_gpt, TINY["context_length"], prompts, "a")
    decoder(ids)
    for k in range(5):  # the walk extends its own cache, not the kept one
        decoder([*ids, *range(100, 101 + k)])
    np.testing.assert_allclose(PrefixLogits(tiny_gpt, 64, prompts, "a")([*ids, 9]), last_logits(tiny_gpt)([*ids, 9]),
                               atol=2e-5, rtol=0)
    other = build_model(ModelSpec(kind="GPTModel", config=config_key(TINY), seed=6)).model
    counting = CountingModel(other)
    PrefixLogits(counting, 64, prompts, "b")([*ids, 9])
    assert counting.fed == [len(ids) + 1], "another model's keys and values were used"


def test_kept_prompts_stay_within_their_bounds(tiny_gpt):
    one = KVCache()
    with torch.inference_mode():
        tiny_gpt(torch.tensor([encode("Every effort moves you")]), kv_cache=one)
    size = one.copy(one.length).nbytes
    prompts = stepper.PromptCaches(max_bytes=3 * size, max_entries=10)
    for k in range(5):
        prompts.put("m", (k, *range(one.length - 1)), one)
    assert len(prompts) == 3 and prompts._bytes == 3 * size
    assert prompts.take("m", (0, 1, 2)) is None, "the oldest should have gone first"
    assert prompts.take("m", (4, 0, 1)).length == 2
    few = stepper.PromptCaches(max_bytes=size - 1)
    few.put("m", (1, 2, 3, 4), one)
    assert len(few) == 0, "a prompt larger than the budget is not kept"
    skeleton = stepper.PromptCaches(max_bytes=2**20, max_entries=4)
    for k in range(10):
        skeleton.put("m", (k,), KVCache(length=1))
    assert len(skeleton) == 4


def test_a_cache_copy_holds_the_first_tokens_only(tiny_gpt):
    cache = KVCache()
    with torch.inference_mode():
        tiny_gpt(torch.tensor([encode("Every effort moves you")]), kv_cache=cache)
    part = cache.copy(2)
    assert part.length == 2
    for layer, (keys, values, n) in part.layers.items():
        assert n == 2 and keys.shape[2] == 2
        assert torch.equal(keys, cache.layers[layer][0][:, :, :2])
        assert keys.data_ptr() != cache.layers[layer][0].data_ptr()
    for bad in (0, cache.length + 1):
        with pytest.raises(ValueError, match="can copy"):
            cache.copy(bad)


def test_sessions_sharing_the_kept_prompts_at_once_get_correct_logits(tiny_gpt):
    """Several reruns (threads) take and keep prompts at the same time: every answer equals the
    full forward pass of its own prompt."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = stepper.PromptCaches(max_bytes=2**16, max_entries=3)  # small: evictions while others read
    base = encode("Every effort moves you forward, and the class follows")
    cases = [base[: 4 + k % 7] + [100 + k] for k in range(40)]
    full = last_logits(tiny_gpt)

    def run(ids):
        return PrefixLogits(tiny_gpt, TINY["context_length"], prompts, "m")(ids)

    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(run, cases))
    for ids, logits in zip(cases, got):
        np.testing.assert_allclose(logits, full(ids), atol=2e-5, rtol=0)
    assert len(prompts) <= 3 and prompts.nbytes <= 2**16
