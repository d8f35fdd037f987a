"""GPT-2 checkpoints into the course's GPTModel, checked against transformers' GPT2LMHeadModel.

Every checkpoint here is a small random GPT-2 made in the test; nothing is downloaded.
"""

import json
import pickle
import socket

import pytest
import safetensors.torch
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from gptviz.build import GPT, ModelSpec, build_model
from gptviz.config import PRESETS, config_key
from gptviz.models import GPTModel, _stacked
from gptviz.weights import (
    WeightsError,
    config_of,
    download_gpt2,
    load_gpt2,
    load_gpt2_file,
    repo_id,
    save_gpt2,
)

SMALL = dict(n_embd=64, n_layer=2, n_head=4, n_positions=32, vocab_size=50257)

# "Hello, I am", a batch of two, a full context, and the last id (<|endoftext|>).
SEQUENCES = [
    torch.tensor([[15496, 11, 314, 716]]),
    torch.tensor([[464, 3290, 318, 257, 922], [50256, 0, 1, 2, 3]]),
    torch.arange(32).unsqueeze(0) * 1571 % 50257,
    torch.tensor([[50256]]),
]


def random_gpt2(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(**{**SMALL, **overrides})).eval()


def assert_same_logits(ours, reference, sequences=SEQUENCES):
    with torch.no_grad():
        for ids in sequences:
            expected = reference(ids).logits
            torch.testing.assert_close(ours(ids), expected, atol=1e-4, rtol=0)


def write_published(reference, directory, buffers=True):
    """The layout of the files on the hub: no `transformer.` prefix, no lm_head, old buffers."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        name.removeprefix("transformer."): tensor.detach().clone().contiguous()
        for name, tensor in reference.state_dict().items()
        if name != "lm_head.weight"
    }
    if buffers:
        n = reference.config.n_positions
        for i in range(reference.config.n_layer):
            state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
            state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    safetensors.torch.save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    config = reference.config.to_dict()
    config["n_ctx"] = config["n_positions"]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def reference():
    return random_gpt2()


@pytest.fixture(scope="module")
def hf_dir(reference, tmp_path_factory):
    directory = tmp_path_factory.mktemp("save_pretrained")
    reference.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="module")
def published_dir(reference, tmp_path_factory):
    return write_published(reference, tmp_path_factory.mktemp("published"))


def copy_config(src, directory):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text((src / "config.json").read_text())
    return directory


# --- Loading matches transformers -------------------------------------------------------


def test_save_pretrained_layout_gives_transformers_logits(reference, hf_dir):
    with safetensors.safe_open(hf_dir / "model.safetensors", "pt") as f:
        assert "transformer.wte.weight" in f.keys()  # the layout this test is about
    assert_same_logits(load_gpt2(hf_dir), reference)


def test_published_layout_gives_transformers_logits(reference, published_dir):
    with safetensors.safe_open(published_dir / "model.safetensors", "pt") as f:
        assert {"wte.weight", "h.0.attn.bias", "h.1.attn.masked_bias"} <= set(f.keys())
    assert_same_logits(load_gpt2(published_dir), reference)


def test_loaded_model_is_frozen_in_eval_mode_with_tied_head(hf_dir):
    model = load_gpt2(hf_dir)
    assert isinstance(model, GPTModel)
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    assert model.out_head.weight is model.tok_emb.weight
    assert config_of(model) == {
        "vocab_size": 50257, "context_length": 32, "emb_dim": 64, "n_heads": 4,
        "n_layers": 2, "drop_rate": 0.1, "qkv_bias": True,
    }


def test_loaded_query_key_value_weights_are_one_block(hf_dir):
    """c_attn is split into W_query, W_key and W_value as views of one tensor, so the loaded
    model multiplies by all three at once when generating (see MultiHeadAttention._qkv)."""
    model = load_gpt2(hf_dir)
    for block in model.trf_blocks:
        linears = (block.att.W_query, block.att.W_key, block.att.W_value)
        with torch.no_grad():
            assert _stacked([lin.weight for lin in linears]) is not None
            assert _stacked([lin.bias for lin in linears]) is not None


def test_loading_leaves_the_global_rng_alone(hf_dir):
    # Built without random initialisation: a shared app's seeded runs are not disturbed.
    state = torch.get_rng_state()
    load_gpt2(hf_dir)
    assert torch.equal(torch.get_rng_state(), state)


def test_untied_output_head_is_loaded_from_lm_head(tmp_path):
    reference = random_gpt2(seed=1, tie_word_embeddings=False)
    assert not torch.equal(reference.lm_head.weight, reference.transformer.wte.weight)
    reference.save_pretrained(tmp_path, safe_serialization=True)
    model = load_gpt2(tmp_path)
    assert model.out_head.weight is not model.tok_emb.weight
    assert_same_logits(model, reference, SEQUENCES[:1])


def test_lm_head_saved_next_to_an_identical_wte_is_tied(reference, tmp_path):
    state = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"].clone()
    safetensors.torch.save_file(state, tmp_path / "model.safetensors")
    reference.config.to_json_file(tmp_path / "config.json")
    model = load_gpt2(tmp_path)
    assert model.out_head.weight is model.tok_emb.weight
    assert_same_logits(model, reference, SEQUENCES[:1])


def test_single_file_infers_the_config_from_shapes(tmp_path):
    # Head size 64, as in every published GPT-2, so the head count can be inferred.
    reference = random_gpt2(seed=2, n_embd=128, n_head=2, n_layer=1, n_positions=16)
    write_published(reference, tmp_path)
    model = load_gpt2_file(tmp_path / "model.safetensors")
    assert config_of(model)["n_heads"] == 2 and config_of(model)["n_layers"] == 1
    assert_same_logits(model, reference, SEQUENCES[:1])


def test_single_file_with_its_config(reference, published_dir):
    config = json.loads((published_dir / "config.json").read_text())
    model = load_gpt2_file(published_dir / "model.safetensors", config=config)
    assert_same_logits(model, reference, SEQUENCES[:1])
    # Without it, 4 heads of 16 cannot be told from the 1 head of 64 that GPT-2's rule gives.
    assert config_of(load_gpt2_file(published_dir / "model.safetensors"))["n_heads"] == 1


@pytest.mark.parametrize("layout", ["hf", "published"])
def test_saved_course_model_opens_in_transformers(tmp_path, layout):
    cfg = PRESETS["tiny (teaching)"]  # qkv_bias False: saved as zero biases
    ours = build_model(ModelSpec(GPT, config_key(cfg), seed=123)).model
    save_gpt2(ours, tmp_path, layout=layout)
    reference = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ids = SEQUENCES[1]
        torch.testing.assert_close(reference(ids).logits, ours(ids), atol=1e-4, rtol=0)
    assert_same_logits(load_gpt2(tmp_path), reference, SEQUENCES[:1])


# --- Refusals, each with a message a user can act on ------------------------------------


def test_missing_files(hf_dir, tmp_path):
    only_weights = tmp_path / "only_weights"
    only_weights.mkdir()
    (only_weights / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    with pytest.raises(WeightsError, match="no config.json"):
        load_gpt2(only_weights)
    with pytest.raises(WeightsError, match="no model.safetensors"):
        load_gpt2(copy_config(hf_dir, tmp_path / "only_config"))
    with pytest.raises(WeightsError, match="does not exist"):
        load_gpt2(tmp_path / "nowhere")
    with pytest.raises(WeightsError, match="does not exist"):
        load_gpt2_file(tmp_path / "nowhere.safetensors")


@pytest.mark.parametrize("keep", [0.5, 0.001])
def test_truncated_file(hf_dir, tmp_path, keep):
    data = (hf_dir / "model.safetensors").read_bytes()
    directory = copy_config(hf_dir, tmp_path / "truncated")
    (directory / "model.safetensors").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        load_gpt2(directory)


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pickle was opened")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_named_safetensors_is_refused(reference, hf_dir, tmp_path, no_unpickling, zip_format):
    directory = copy_config(hf_dir, tmp_path / "disguised")
    torch.save(reference.state_dict(), directory / "model.safetensors", _use_new_zipfile_serialization=zip_format)
    with pytest.raises(WeightsError, match="pickle") as error:
        load_gpt2(directory)
    assert "run arbitrary code" in str(error.value) and "safetensors" in str(error.value)
    with pytest.raises(WeightsError, match="pickle"):
        load_gpt2_file(directory / "model.safetensors")


def test_pytorch_model_bin_is_refused(reference, hf_dir, tmp_path, no_unpickling):
    directory = copy_config(hf_dir, tmp_path / "bin")
    torch.save(reference.state_dict(), directory / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="only pytorch_model.bin.*pickle.*run arbitrary code"):
        load_gpt2(directory)
    for name in ("pytorch_model.bin", "model.pt", "weights.pkl"):
        path = tmp_path / name
        path.write_bytes((directory / "pytorch_model.bin").read_bytes())
        with pytest.raises(WeightsError, match="pickle"):
            load_gpt2_file(path)
        with pytest.raises(WeightsError, match="pickle"):
            load_gpt2(path)


def test_other_model_type_in_config_is_refused(hf_dir, tmp_path):
    directory = tmp_path / "bert"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    config = json.loads((hf_dir / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(WeightsError, match="'bert' model, not GPT-2"):
        load_gpt2(directory)


@pytest.mark.parametrize(
    "keys",
    [
        ["bert.embeddings.word_embeddings.weight", "bert.encoder.layer.0.attention.self.query.weight"],
        ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "lm_head.weight"],
    ],
)
def test_state_dict_of_another_architecture_is_refused(hf_dir, tmp_path, keys):
    directory = copy_config(hf_dir, tmp_path / "other")
    safetensors.torch.save_file({k: torch.zeros(4, 4) for k in keys}, directory / "model.safetensors")
    with pytest.raises(WeightsError, match="does not look like a GPT-2 checkpoint.*" + keys[0].split(".")[0]):
        load_gpt2(directory)
    with pytest.raises(WeightsError, match="does not look like a GPT-2 checkpoint"):
        load_gpt2_file(directory / "model.safetensors")


def test_mismatched_names_and_shapes_are_named(reference, hf_dir, tmp_path):
    state = {k: v.detach().clone() for k, v in reference.state_dict().items() if k != "lm_head.weight"}

    def attempt(changed):
        directory = copy_config(hf_dir, tmp_path / str(len(list(tmp_path.iterdir()))))
        safetensors.torch.save_file(changed, directory / "model.safetensors")
        with pytest.raises(WeightsError) as error:
            load_gpt2(directory)
        return str(error.value)

    missing = {k: v for k, v in state.items() if k != "transformer.h.1.mlp.c_fc.bias"}
    assert "missing 1 tensor(s): 'h.1.mlp.c_fc.bias'" in attempt(missing)
    extra = {**state, "transformer.h.0.attn.rotary.weight": torch.zeros(3)}
    assert "unexpected 1 tensor(s): 'h.0.attn.rotary.weight'" in attempt(extra)
    # c_attn saved the nn.Linear way round, (out, in): the transposition must not be guessed.
    c_attn = "transformer.h.0.attn.c_attn.weight"
    flipped = {**state, c_attn: state[c_attn].t().contiguous()}
    assert "'h.0.attn.c_attn.weight' has shape (192, 64), expected (64, 192)" in attempt(flipped)
    ints = {**state, "transformer.ln_f.bias": torch.zeros(64, dtype=torch.int64)}
    assert "'ln_f.bias' holds I64" in attempt(ints)


def test_config_that_does_not_match_the_weights(hf_dir, tmp_path):
    directory = tmp_path / "three_layers"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    config = json.loads((hf_dir / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "n_layer": 3}))
    with pytest.raises(WeightsError, match="missing 12 tensor\\(s\\): 'h.2.ln_1.weight'"):
        load_gpt2(directory)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon is 1e-06; the course's LayerNorm uses 1e-5"),
        ({"activation_function": "relu"}, "activation_function is 'relu'"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"n_head": 5}, "emb_dim \\(64\\) must be divisible by n_heads \\(5\\)"),
        ({"vocab_size": 1000}, "vocab_size is 1000, smaller than GPT-2's 50257"),
    ],
)
def test_configs_the_course_model_cannot_compute_are_refused(hf_dir, tmp_path, change, message):
    directory = tmp_path / "changed"
    directory.mkdir()
    (directory / "model.safetensors").symlink_to(hf_dir / "model.safetensors")
    config = json.loads((hf_dir / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(WeightsError, match=message):
        load_gpt2(directory)


def test_file_over_max_bytes_is_refused_before_reading(hf_dir, no_unpickling):
    size = (hf_dir / "model.safetensors").stat().st_size
    with pytest.raises(WeightsError, match="more than the limit of 1.0 MiB"):
        load_gpt2_file(hf_dir / "model.safetensors", max_bytes=2**20)
    with pytest.raises(WeightsError, match="more than the limit"):
        load_gpt2(hf_dir, max_bytes=size - 1)
    assert isinstance(load_gpt2(hf_dir, max_bytes=size), GPTModel)


# --- Downloading, without a network -------------------------------------------------------


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(30)
def test_unreachable_hub_says_offline(tmp_path):
    with pytest.raises(WeightsError, match="offline: could not reach the Hugging Face hub.*point to the directory"):
        download_gpt2("small", cache_dir=tmp_path, endpoint=f"http://127.0.0.1:{unused_port()}")


def test_connection_lost_during_download_says_offline(monkeypatch, tmp_path):
    import httpx2
    import huggingface_hub

    def drop(**kwargs):
        raise httpx2.ConnectError("connection reset")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", drop)
    with pytest.raises(WeightsError, match="offline.*openai-community/gpt2-medium"):
        download_gpt2("medium", cache_dir=tmp_path)


def test_download_fetches_only_config_and_safetensors_and_reports_progress(monkeypatch, reference, tmp_path):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, allow_patterns, cache_dir, tqdm_class, **kwargs):
        calls.append((repo_id, allow_patterns))
        target = write_published(reference, cache_dir / "snapshot", buffers=False)
        with tqdm_class(total=100, desc="Downloading bytes", unit="B", name="hf") as bar:
            bar.update(60)
            bar.update(40)
        return str(target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    seen = []
    path = download_gpt2("gpt2-xl (1558M)", cache_dir=tmp_path, progress=lambda *a: seen.append(a))
    assert calls == [("openai-community/gpt2-xl", ["config.json", "model.safetensors"])]
    assert seen == [("Downloading bytes", 60, 100), ("Downloading bytes", 100, 100)]
    assert_same_logits(load_gpt2(path), reference, SEQUENCES[:1])


def test_sizes():
    assert repo_id("small") == repo_id("gpt2") == repo_id("124M") == "openai-community/gpt2"
    assert repo_id("gpt2-medium (355M)") == repo_id("gpt2-medium") == "openai-community/gpt2-medium"
    with pytest.raises(WeightsError, match="unknown GPT-2 size 'huge'"):
        download_gpt2("huge")
