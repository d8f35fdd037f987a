"""Configs a learner picks or edits: the seed's dict, the GPT-2 presets, sizes, validation.

Independent references: the seed and the course notebook (GPT_CONFIG_124M; 163,009,536 and
124,412,160 parameters), Hugging Face's GPT2LMHeadModel counted on the meta device (nothing
allocated) for the official GPT-2 sizes, and `sum(p.numel())` of models actually built.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from gptviz.config import (
    GPT_CONFIG_124M,
    PRESETS,
    ConfigError,
    config_key,
    count_parameters,
    estimate_bytes,
    total_parameters,
    validate_config,
)
from gptviz import weights
from gptviz.models import PARTS, DummyGPTModel, GPTModel

# The seed's dict, written out literally (the course: "GPT_CONFIG_124M = {...}").
SEED_GPT_CONFIG_124M = {
    "vocab_size": 50257,  # BPE encoding has the vocab size of 50257
    "context_length": 1024,  # number of token we can look at ones to predict new word
    "emb_dim": 768,  # The Toekn Embedding dimension
    "n_heads": 12,  # number of attention heads
    "n_layers": 12,  # Number of layers (Transformer blocks)
    "drop_rate": 0.1,  # Dropout Rate
    "qkv_bias": False,  # Quert-Key-Value Bias
}

# Plenty of memory, so tests about other problems are not about the machine running them.
BIG_BUDGET = 1 << 50

SMALL = {
    "vocab_size": 101,
    "context_length": 16,
    "emb_dim": 24,
    "n_heads": 3,
    "n_layers": 2,
    "drop_rate": 0.1,
    "qkv_bias": False,
}


def test_gpt_config_124m_is_the_seeds_dict_exactly():
    assert GPT_CONFIG_124M == SEED_GPT_CONFIG_124M
    assert list(GPT_CONFIG_124M) == list(SEED_GPT_CONFIG_124M)  # same order on screen
    for key, value in SEED_GPT_CONFIG_124M.items():
        # `==` alone would accept 0 for False or 768.0 for 768.
        assert type(GPT_CONFIG_124M[key]) is type(value), key


def test_the_small_preset_is_the_seeds_config():
    assert PRESETS["gpt2-small (124M)"] == SEED_GPT_CONFIG_124M


# --- Sizes -----------------------------------------------------------------------------

# GPT-2 as released (and as transformers builds it) has a bias in the query/key/value
# projection and ties out_head to tok_emb; these are its official parameter counts.
OFFICIAL_GPT2 = {
    "gpt2-small (124M)": (768, 12, 12, 124_439_808),
    "gpt2-medium (355M)": (1024, 24, 16, 354_823_168),
    "gpt2-large (774M)": (1280, 36, 20, 774_030_080),
    "gpt2-xl (1558M)": (1600, 48, 25, 1_557_611_200),
}


@pytest.mark.parametrize("name", list(OFFICIAL_GPT2))
def test_presets_have_the_gpt2_sizes(name):
    emb_dim, n_layers, n_heads, official = OFFICIAL_GPT2[name]
    cfg = PRESETS[name]
    assert (cfg["emb_dim"], cfg["n_layers"], cfg["n_heads"]) == (emb_dim, n_layers, n_heads)
    assert (cfg["vocab_size"], cfg["context_length"]) == (50257, 1024)
    assert cfg["emb_dim"] // cfg["n_heads"] == 64  # every GPT-2 head has 64 dimensions
    assert total_parameters({**cfg, "qkv_bias": True}, tied=True) == official
    # Without the qkv bias (the course's chapter 4 setting) each layer has 3 * emb_dim fewer.
    assert total_parameters(cfg, tied=True) == official - 3 * emb_dim * n_layers
    validate_config(cfg, memory_budget=BIG_BUDGET)


@pytest.mark.parametrize("name", list(OFFICIAL_GPT2))
def test_preset_sizes_match_transformers_gpt2(name):
    """Count Hugging Face's GPT-2 of the same shape on the meta device (nothing allocated)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = PRESETS[name]
    hf_config = GPT2Config(**weights.hf_config(cfg, tied=True))  # GPT-2 ties its output head
    with torch.device("meta"):
        hf = GPT2LMHeadModel(hf_config)
    hf_params = sum(p.numel() for p in hf.parameters())  # tied weights counted once
    assert total_parameters({**cfg, "qkv_bias": True}, tied=True) == hf_params == OFFICIAL_GPT2[name][3]


def test_the_books_parameter_counts():
    """Chapter 4: "Total number of parameters: 163,009,536" and, with weight tying,
    "Number of trainable parameters considering weight tying: 124,412,160"."""
    assert total_parameters(GPT_CONFIG_124M) == 163_009_536
    assert total_parameters(GPT_CONFIG_124M, tied=True) == 124_412_160
    # "Total size of the model: 621.83 MB"
    assert f"{4 * total_parameters(GPT_CONFIG_124M) / 2**20:.2f}" == "621.83"
    rows = {r["component"]: r for r in count_parameters(GPT_CONFIG_124M)}
    assert rows["tok_emb"]["params"] == rows["out_head"]["params"] == 50257 * 768
    assert all(r["bytes_fp32"] == 4 * r["params"] for r in rows.values())


def test_the_skeleton_has_only_embeddings_and_the_output_head():
    skeleton = total_parameters(GPT_CONFIG_124M, placeholder_blocks=True)
    assert skeleton == 50257 * 768 + 1024 * 768 + 768 * 50257


def _component(name: str) -> str:
    """The count_parameters row a parameter of a built model belongs to."""
    parts = name.split(".")
    if parts[0] != "trf_blocks":
        return parts[0]  # tok_emb, pos_emb, final_norm, out_head
    return {"att": "attention", "ff": "feed_forward", "norm1": "norm1 + norm2", "norm2": "norm1 + norm2"}[parts[2]]


def _counted(cfg, **kwargs) -> dict:
    """count_parameters rows by component ("trf_blocks (x2): attention" -> "attention"),
    leaving out components with no parameters."""
    return {r["component"].split(": ")[-1]: r["params"] for r in count_parameters(cfg, **kwargs) if r["params"]}


MIXES = [frozenset(c) for n in range(len(PARTS) + 1) for c in itertools.combinations(PARTS, n)]


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("parts", MIXES, ids=lambda p: "+".join(sorted(p)) or "none")
def test_count_parameters_matches_a_built_model(parts, qkv_bias):
    cfg = {**SMALL, "qkv_bias": qkv_bias}
    model = GPTModel(cfg, parts=parts)
    built = {}
    for name, p in model.named_parameters():
        built[_component(name)] = built.get(_component(name), 0) + p.numel()
    assert _counted(cfg, parts=parts) == built
    assert total_parameters(cfg, parts=parts) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "cfg",
    [SMALL, {**SMALL, "n_layers": 5, "emb_dim": 8, "n_heads": 8}, {**SMALL, "context_length": 1, "vocab_size": 1}],
)
def test_count_parameters_matches_the_built_skeleton(cfg):
    model = DummyGPTModel(cfg)
    built = {_component(name): p.numel() for name, p in model.named_parameters()}
    assert _counted(cfg, placeholder_blocks=True) == built
    assert total_parameters(cfg, placeholder_blocks=True) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cfg", [SMALL, {**SMALL, "qkv_bias": True, "n_layers": 3}])
def test_count_parameters_matches_the_full_model_by_default(cfg):
    model = GPTModel(cfg)
    assert total_parameters(cfg) == sum(p.numel() for p in model.parameters())
    assert total_parameters(cfg, tied=True) == sum(p.numel() for p in model.parameters()) - model.out_head.weight.numel()


def test_estimate_bytes_counts_weights_and_the_causal_masks():
    masks = SMALL["n_layers"] * SMALL["context_length"] ** 2
    assert estimate_bytes(SMALL) == 4 * total_parameters(SMALL) + masks
    assert estimate_bytes(SMALL, placeholder_blocks=True) == 4 * total_parameters(SMALL, placeholder_blocks=True)


# --- config_key ------------------------------------------------------------------------


def test_config_key_is_hashable_and_ignores_key_order():
    reordered = dict(reversed(list(GPT_CONFIG_124M.items())))
    assert config_key(reordered) == config_key(GPT_CONFIG_124M)
    assert hash(config_key(reordered)) == hash(config_key(GPT_CONFIG_124M))
    assert dict(config_key(GPT_CONFIG_124M)) == GPT_CONFIG_124M
    assert config_key({**GPT_CONFIG_124M, "n_layers": 6}) != config_key(GPT_CONFIG_124M)


# --- Validation: every problem named, with its value -------------------------------------


def _problems(cfg, **kwargs) -> list[str]:
    kwargs.setdefault("memory_budget", BIG_BUDGET)
    with pytest.raises(ConfigError) as error:
        validate_config(cfg, **kwargs)
    assert isinstance(error.value, ValueError)
    assert str(error.value) == "; ".join(error.value.problems)
    return error.value.problems


def test_valid_configs_are_returned_unchanged():
    for cfg in [GPT_CONFIG_124M, SMALL, *PRESETS.values()]:
        assert validate_config(cfg, memory_budget=BIG_BUDGET) is cfg


def test_emb_dim_must_be_divisible_by_n_heads():
    (problem,) = _problems({**SMALL, "emb_dim": 50, "n_heads": 4})
    assert "emb_dim (50)" in problem and "n_heads (4)" in problem and "divisible" in problem


@pytest.mark.parametrize("key", ["vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"])
@pytest.mark.parametrize("value", [0, -3])
def test_sizes_must_be_positive(key, value):
    (problem,) = _problems({**SMALL, key: value})
    assert key in problem and str(value) in problem and "positive" in problem


@pytest.mark.parametrize("key", ["vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"])
@pytest.mark.parametrize("value", [768.0, 2.5, "768", True, None])
def test_sizes_must_be_whole_numbers(key, value):
    (problem,) = _problems({**SMALL, key: value})
    assert key in problem and repr(value) in problem and "whole number" in problem


@pytest.mark.parametrize("value", [1.0, 1, 1.5, -0.1, float("nan"), float("inf"), "0.1", True, None])
def test_drop_rate_must_be_in_zero_to_one(value):
    (problem,) = _problems({**SMALL, "drop_rate": value})
    assert "drop_rate" in problem and repr(value) in problem and "[0, 1)" in problem


@pytest.mark.parametrize("value", [0.0, 0, 0.5, 0.999])
def test_drop_rates_a_model_can_use(value):
    validate_config({**SMALL, "drop_rate": value}, memory_budget=BIG_BUDGET)


@pytest.mark.parametrize("value", [1, 0, "False", None, 1.0])
def test_qkv_bias_must_be_true_or_false(value):
    (problem,) = _problems({**SMALL, "qkv_bias": value})
    assert "qkv_bias" in problem and repr(value) in problem


def test_unknown_keys_are_named():
    (problem,) = _problems({**SMALL, "ctx_len": 1024, "n_head": 12})
    assert "'ctx_len'" in problem and "'n_head'" in problem and "unknown" in problem
    assert "context_length" in problem  # and it says which keys there are


def test_missing_keys_are_named():
    cfg = {k: v for k, v in SMALL.items() if k not in ("qkv_bias", "n_layers")}
    (problem,) = _problems(cfg)
    assert "missing" in problem and "qkv_bias" in problem and "n_layers" in problem


def test_a_model_too_big_for_memory_is_refused_before_it_is_built():
    needed = estimate_bytes(GPT_CONFIG_124M)
    (problem,) = _problems(GPT_CONFIG_124M, memory_budget=needed - 1)
    assert f"{needed / 2**30:.2f} GiB" in problem and "available" in problem
    validate_config(GPT_CONFIG_124M, memory_budget=needed)


def test_a_huge_context_length_is_refused_for_its_attention_masks():
    """context_length^2 mask entries per layer: 10^6 tokens would need terabytes."""
    (problem,) = _problems({**SMALL, "context_length": 1_000_000}, memory_budget=8 * 2**30)
    assert "GiB" in problem


def test_all_problems_are_listed_at_once():
    cfg = {**SMALL, "emb_dim": -1, "n_heads": 2.0, "drop_rate": 1.0, "qkv_bias": "yes", "colour": "red"}
    del cfg["n_layers"]
    problems = _problems(cfg)
    assert len(problems) == 6
    text = " | ".join(problems)
    for fragment in ["'colour'", "n_layers", "emb_dim", "-1", "n_heads", "2.0", "drop_rate", "1.0", "qkv_bias", "'yes'"]:
        assert fragment in text


def test_a_config_that_is_not_a_dict():
    (problem,) = _problems([("emb_dim", 768)])
    assert "dict" in problem and "list" in problem
