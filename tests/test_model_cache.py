"""The model cache (`ui.get_model`): shared by every session, bounded in bytes, and making room
before a model is built, so a class switching models never holds them all at once.

Tiny models (the teaching preset, ~19 MB each) stand in for the 124M ones; the cache's budget
is set per test in multiples of their size, measured from their parameters and buffers.
"""

from __future__ import annotations

import threading
import time
import weakref

import pytest
import torch

from gptviz import ui
from gptviz.build import GPT, SKELETON, ModelSpec, build_model
from gptviz.config import PRESETS, config_key, estimate_bytes
from gptviz.lru import ByteLRU
from gptviz.models import ALL_PARTS
from gptviz.stepper import walk

TINY = config_key(PRESETS["tiny (teaching)"])


def spec(seed: int, kind: str = SKELETON) -> ModelSpec:
    return ModelSpec(kind, TINY, seed=seed)


SIZE = ui._model_bytes(build_model(spec(0)))


@pytest.fixture
def models(monkeypatch):
    """A fresh model cache of n tiny models' worth, and the specs built through it, in order."""
    builds = []

    def recording_build(s):
        builds.append(s)
        return build_model(s)

    monkeypatch.setattr(ui, "build_model", recording_build)
    ui.TRACES.clear()

    def make(n_models: float):
        cache = ByteLRU(int(n_models * SIZE), size_of=ui._model_bytes, keep_oversized=True)
        monkeypatch.setattr(ui, "MODELS", cache)
        return cache, builds

    yield make
    ui.TRACES.clear()


def test_size_known_before_building_is_what_the_model_holds():
    for kind, parts in ((SKELETON, ALL_PARTS), (GPT, ALL_PARTS), (GPT, frozenset({"attention"}))):
        s = ModelSpec(kind, TINY, parts=parts, seed=1)
        assert ui._expected_model_bytes(s) == ui._model_bytes(build_model(s)), s.label
    # the default budget holds the 124M GPTModel, but not beside its skeleton (no model is built)
    small = PRESETS["gpt2-small (124M)"]
    gpt, skeleton = estimate_bytes(small), estimate_bytes(small, placeholder_blocks=True)
    assert gpt <= ui.MODEL_CACHE_BYTES < gpt + skeleton


def test_the_least_recently_used_model_is_freed_before_a_new_one_is_built(models):
    cache, builds = models(2.5)
    first = weakref.ref(ui.get_model(spec(1)).model)
    ui.get_model(spec(2))
    alive_at_build = []
    original = ui.build_model

    def build_and_look(s):
        alive_at_build.append((first() is not None, spec(2) in cache))
        return original(s)

    ui.build_model = build_and_look  # restored by the fixture's monkeypatch
    ui.get_model(spec(3))
    assert alive_at_build == [(False, True)]  # model 1 was gone (freed) while model 3 was built
    assert len(cache) == 2 and cache.nbytes <= 2.5 * SIZE


def test_a_hit_makes_a_model_the_most_recently_used(models):
    cache, builds = models(2.5)
    a = ui.get_model(spec(1))
    ui.get_model(spec(2))
    assert ui.get_model(spec(1)) is a  # a hit: not rebuilt, and now the most recent
    ui.get_model(spec(3))
    assert spec(1) in cache and spec(2) not in cache and spec(3) in cache
    assert builds == [spec(1), spec(2), spec(3)]


def test_a_model_larger_than_the_budget_is_still_built_alone_and_kept(models):
    cache, builds = models(0.5)
    ui.get_model(spec(1))  # over the budget by itself
    assert len(cache) == 1 and cache.nbytes > cache.max_bytes
    built = ui.get_model(spec(1))
    assert builds == [spec(1)], "the rerun rebuilt a model larger than the budget"
    assert built.model(torch.tensor([[1, 2, 3]])).shape == (1, 3, 50257)
    ui.get_model(spec(2))
    assert builds == [spec(1), spec(2)] and spec(1) not in cache and len(cache) == 1


@pytest.mark.parametrize("n_models", [3, 0.5])  # fits the budget, and larger than it
def test_sessions_asking_for_one_model_at_once_build_it_once(models, monkeypatch, n_models):
    cache, builds = models(n_models)
    original = ui.build_model

    def slow_build(s):
        time.sleep(0.3)
        return original(s)

    monkeypatch.setattr(ui, "build_model", slow_build)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ui.get_model(spec(7)))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == [spec(7)] and len(results) == 6 and all(r is results[0] for r in results)


def test_caches_built_on_a_model_do_not_keep_it_alive_once_evicted(models):
    """Traces and the Generate page's per-prefix logits hold numpy arrays, not the model."""
    cache, _ = models(1.5)
    s = spec(11, kind=GPT)
    ids = ((1, 2, 3, 4),)
    ui._cached_trace(s, ids, True, None)
    ui.next_logits(s, (5, 6, 7))  # computed with a decoder of its own
    logits = ui.logits_after(s)  # a decoder over the model, as the Generate page uses it
    walk(logits, [8, 9], steps=2)
    del logits
    gone = weakref.ref(ui.get_model(s).model)
    ui.get_model(spec(12, kind=GPT))  # evicts s's model
    assert s not in cache
    assert gone() is None, "something cached still holds the evicted model"
    ui.next_logits.clear()


def test_a_checkpoints_size_is_estimated_from_its_file(tmp_path):
    """A trained model's bytes are not in any config before loading: its fp32 file's size stands in."""
    from gptviz.build import PRETRAINED
    from gptviz.weights import save_gpt2

    save_gpt2(build_model(ModelSpec(GPT, TINY, seed=3)).model, tmp_path)
    for weights in (tmp_path, tmp_path / "model.safetensors"):
        s = ModelSpec(PRETRAINED, weights=str(weights))
        expected, held = ui._expected_model_bytes(s), ui._model_bytes(build_model(s))
        assert abs(expected - held) <= 0.05 * held, (weights, expected, held)
    assert ui._expected_model_bytes(ModelSpec(PRETRAINED, weights=str(tmp_path / "missing"))) is None
    assert ui._expected_model_bytes(ModelSpec(PRETRAINED, weights="bad\0path")) is None


def test_a_checkpoint_stays_cached_when_the_servers_free_memory_changes(tmp_path, models):
    """The UI caps a checkpoint's size by the memory free at each rerun: that cap must not make
    the same checkpoint a new cache key (a rebuild and an untraced model on every rerun)."""
    from gptviz.build import PRETRAINED
    from gptviz.weights import save_gpt2

    save_gpt2(build_model(ModelSpec(GPT, TINY, seed=3)).model, tmp_path)
    first = ModelSpec(PRETRAINED, weights=str(tmp_path), max_bytes=900 * 2**20)
    later = ModelSpec(PRETRAINED, weights=str(tmp_path), max_bytes=870 * 2**20)  # less free memory now
    assert first == later and hash(first) == hash(later)
    _, builds = models(4)
    assert ui.get_model(first) is ui.get_model(later) and len(builds) == 1
