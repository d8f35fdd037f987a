"""GPT-2 checkpoints (Hugging Face safetensors layout) into the course's GPTModel.

What chapter 5's `load_weights_into_gpt` and nanoGPT's `from_pretrained` do, with every
name and shape checked instead of trusted:

- `load_gpt2(directory)`: `config.json` + `model.safetensors`, as `save_pretrained` writes
  them (names prefixed `transformer.`) or as published on the hub (no prefix).
- `load_gpt2_file(path)`: a lone `.safetensors` file; the config is inferred from shapes.
- `download_gpt2(size)`: fetch those two files from the hub (and nothing else).
- `save_gpt2(model, directory)`: the reverse, so a course model opens in transformers.

Only safetensors is read. A pickle (`pytorch_model.bin`, `.pt`, ...) can run arbitrary
code when loaded, so it is refused, never passed to `torch.load`.
"""

from __future__ import annotations

import importlib
import json
import math
import re
import struct
from pathlib import Path

import torch

from .config import GPT2_VOCAB_SIZE, ConfigError, available_memory_bytes, total_parameters, validate_config
from .models import ALL_PARTS, GPTModel


class WeightsError(ValueError):
    """A checkpoint that cannot be loaded, with a message a user can act on."""


# --- The name map ---------------------------------------------------------------------

# GPT-2 was written with a Conv1D layer that stores its weight as (in, out); nn.Linear
# stores (out, in). These four, and only these, are transposed (as in nanoGPT).
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# Non-learned buffers some checkpoints carry (the causal mask and its fill value).
IGNORED = ("attn.bias", "attn.masked_bias")

# Hugging Face name -> course name, outside the blocks.
TOP_LEVEL = {
    "wte.weight": "tok_emb.weight",
    "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "final_norm.scale",
    "ln_f.bias": "final_norm.shift",
}
LM_HEAD = "lm_head.weight"  # -> out_head.weight; absent when tied to wte, as in GPT-2

# Inside block i: h.{i}.<key> -> trf_blocks.{i}.<value>. c_attn holds query, key and value
# side by side and is split into the course's three projections.
BLOCK = {
    "ln_1.weight": "norm1.scale",
    "ln_1.bias": "norm1.shift",
    "attn.c_attn.weight": ("att.W_query.weight", "att.W_key.weight", "att.W_value.weight"),
    "attn.c_attn.bias": ("att.W_query.bias", "att.W_key.bias", "att.W_value.bias"),
    "attn.c_proj.weight": "att.out_proj.weight",
    "attn.c_proj.bias": "att.out_proj.bias",
    "ln_2.weight": "norm2.scale",
    "ln_2.bias": "norm2.shift",
    "mlp.c_fc.weight": "ff.layers.0.weight",
    "mlp.c_fc.bias": "ff.layers.0.bias",
    "mlp.c_proj.weight": "ff.layers.2.weight",
    "mlp.c_proj.bias": "ff.layers.2.bias",
}

HEAD_DIM = 64  # every published GPT-2 size uses 64 dimensions per head

# The published checkpoints; `download_gpt2` fetches only these two files of each.
REPOS = {
    "small": "openai-community/gpt2",
    "medium": "openai-community/gpt2-medium",
    "large": "openai-community/gpt2-large",
    "xl": "openai-community/gpt2-xl",
}
_SIZE_ALIASES = {"gpt2": "small", "124m": "small", "355m": "medium", "774m": "large", "1558m": "xl", "1.5b": "xl"}
FILES = ("config.json", "model.safetensors")
_DIRECTORY_HOLDS = "a GPT-2 checkpoint directory holds config.json and model.safetensors"

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


def expected_shapes(cfg: dict, tied: bool = True) -> dict[str, tuple]:
    """Every tensor a GPT-2 checkpoint of this config holds, unprefixed, in HF's (in, out) layout."""
    d, v = cfg["emb_dim"], cfg["vocab_size"]
    shapes = {"wte.weight": (v, d), "wpe.weight": (cfg["context_length"], d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
    block = {
        "ln_1.weight": (d,),
        "ln_1.bias": (d,),
        "attn.c_attn.weight": (d, 3 * d),  # query | key | value
        "attn.c_attn.bias": (3 * d,),
        "attn.c_proj.weight": (d, d),
        "attn.c_proj.bias": (d,),
        "ln_2.weight": (d,),
        "ln_2.bias": (d,),
        "mlp.c_fc.weight": (d, 4 * d),
        "mlp.c_fc.bias": (4 * d,),
        "mlp.c_proj.weight": (4 * d, d),
        "mlp.c_proj.bias": (d,),
    }
    for i in range(cfg["n_layers"]):
        shapes.update({f"h.{i}.{key}": shape for key, shape in block.items()})
    if not tied:
        shapes[LM_HEAD] = (v, d)
    return shapes


# --- Configs ----------------------------------------------------------------------------


def gpt2_config(hf: dict) -> dict:
    """The course's cfg dict from a Hugging Face GPT-2 `config.json` (as a dict).

    Refuses settings our GPTModel does not compute: another model type, a LayerNorm eps
    other than 1e-5, an activation other than GPT-2's tanh GELU, unusual attention scaling.
    """
    if hf.get("model_type", "gpt2") != "gpt2":
        raise WeightsError(f"config.json describes a {hf['model_type']!r} model, not GPT-2 (model_type 'gpt2')")
    problems = []
    missing = [k for k in ("n_embd", "n_layer", "n_head", "vocab_size") if k not in hf]
    if "n_positions" not in hf and "n_ctx" not in hf:
        missing.append("n_positions")
    if missing:
        raise WeightsError(f"config.json lacks {', '.join(missing)}: not a GPT-2 config")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or not math.isclose(eps, 1e-5, rel_tol=1e-6):
        problems.append(f"layer_norm_epsilon is {eps!r}; the course's LayerNorm uses 1e-5")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):  # both are the tanh GELU
        problems.append(f"activation_function is {activation!r}; the course's GELU is GPT-2's 'gelu_new'")
    if not hf.get("scale_attn_weights", True):
        problems.append("scale_attn_weights is false; the course divides attention scores by sqrt(head_dim)")
    if hf.get("scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx is true; the course does not scale by layer")
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        problems.append(f"n_inner is {hf['n_inner']}; the course's feed-forward expands 4x ({4 * hf['n_embd']})")
    if hf.get("add_cross_attention", False):
        problems.append("add_cross_attention is true; GPT-2 has no cross-attention")
    vocab = hf["vocab_size"]
    if isinstance(vocab, int) and vocab < GPT2_VOCAB_SIZE:
        problems.append(f"vocab_size is {vocab}, smaller than GPT-2's {GPT2_VOCAB_SIZE}: not every token would fit")
    cfg = {
        "vocab_size": vocab,
        "context_length": hf.get("n_positions", hf.get("n_ctx")),
        "emb_dim": hf["n_embd"],
        "n_heads": hf["n_head"],
        "n_layers": hf["n_layer"],
        "drop_rate": hf.get("resid_pdrop", 0.1),  # inert: a loaded model runs in eval mode
        "qkv_bias": True,  # GPT-2's c_attn has a bias
    }
    if problems:
        raise WeightsError("unsupported GPT-2 config: " + "; ".join(problems))
    return _validated(cfg)


def _validated(cfg: dict) -> dict:
    # Memory is checked against the checkpoint itself (see _check_memory), not here.
    try:
        return validate_config(cfg, memory_budget=2**62)
    except ConfigError as error:
        raise WeightsError(f"invalid GPT-2 config: {error}") from error


def read_gpt2_config(directory) -> dict:
    """The course's cfg dict from `directory/config.json`."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise WeightsError(f"no config.json in {directory}: {_DIRECTORY_HOLDS}")
    return gpt2_config(_read_json(path))


def infer_gpt2_config(shapes: dict[str, tuple]) -> dict:
    """The course's cfg dict from tensor shapes (unprefixed names), for a file with no config.json.

    Sizes come from `wte` (vocab_size x emb_dim), `wpe` (context_length x emb_dim) and the
    number of `h.N.` blocks. The head count is not stored anywhere in the weights (the
    heads are slices of one matrix), so it is assumed to be emb_dim / 64, which holds for
    every published GPT-2 size (12, 16, 20, 25 heads). Pass a config for anything else.
    """
    if len(shapes.get("wte.weight", ())) != 2 or len(shapes.get("wpe.weight", ())) != 2:
        raise WeightsError(_not_gpt2(shapes))
    vocab_size, emb_dim = shapes["wte.weight"]
    context_length = shapes["wpe.weight"][0]
    layers = {int(m.group(1)) for name in shapes if (m := re.match(r"h\.(\d+)\.", name))}
    if emb_dim % HEAD_DIM:
        raise WeightsError(
            f"cannot infer the number of heads: emb_dim {emb_dim} is not a multiple of {HEAD_DIM} "
            "(GPT-2's head size); pass the checkpoint's config.json"
        )
    cfg = {
        "vocab_size": vocab_size,
        "context_length": context_length,
        "emb_dim": emb_dim,
        "n_heads": emb_dim // HEAD_DIM,
        "n_layers": len(layers),
        "drop_rate": 0.1,
        "qkv_bias": True,
    }
    if vocab_size < GPT2_VOCAB_SIZE:
        raise WeightsError(f"vocab_size is {vocab_size}, smaller than GPT-2's {GPT2_VOCAB_SIZE}")
    return _validated(cfg)


def config_of(model: GPTModel) -> dict:
    """The course's cfg dict of a built GPTModel, read from its modules' shapes."""
    att = model.trf_blocks[0].att
    vocab_size, emb_dim = model.tok_emb.weight.shape
    return {
        "vocab_size": vocab_size,
        "context_length": model.pos_emb.weight.shape[0],
        "emb_dim": emb_dim,
        "n_heads": att.num_heads,
        "n_layers": len(model.trf_blocks),
        "drop_rate": model.drop_emb.p,
        "qkv_bias": att.W_query.bias is not None,
    }


# --- Reading the file safely ----------------------------------------------------------


def _pickle_message(path: Path) -> str:
    return (
        f"{path.name} is a pickle file (PyTorch's torch.save format). Loading a pickle can run "
        "arbitrary code, so gptviz never opens one. Convert it to safetensors on a machine you "
        "trust (safetensors.torch.save_file(state_dict, 'model.safetensors')) and load that."
    )


def _check_safetensors_header(path: Path) -> None:
    """Refuse pickles, by name or by their first bytes, and anything else not safetensors.

    A safetensors file is an 8-byte little-endian header length, then a JSON header.
    torch.save writes a zip (PK\\x03\\x04) or a bare pickle (\\x80 then the protocol).
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(_pickle_message(path))
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
    looks_safetensors = len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8
    if looks_safetensors:
        return
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise WeightsError(_pickle_message(path))
    raise WeightsError(f"{path.name} is not a safetensors file (truncated or corrupt, or another format)")


def _check_size(path: Path, max_bytes: int | None) -> None:
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise WeightsError(f"{path.name} is {size / 2**20:.1f} MiB, more than the limit of {max_bytes / 2**20:.1f} MiB")


def _open(path: Path):
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except SafetensorError as error:
        raise WeightsError(f"{path.name} is truncated or corrupt: {error}") from error


def _unprefixed(keys) -> dict[str, str]:
    """Unprefixed name -> name in the file (save_pretrained adds `transformer.`)."""
    names: dict[str, str] = {}
    for key in keys:
        name = key.removeprefix("transformer.")
        if name in names:
            raise WeightsError(f"the checkpoint holds both {names[name]!r} and {key!r}")
        names[name] = key
    return names


def _in_block(name: str) -> str:
    """'h.3.attn.c_attn.weight' -> 'attn.c_attn.weight'; names outside blocks unchanged."""
    return re.sub(r"^h\.\d+\.", "", name)


def _is_ignored(name: str) -> bool:
    return name.startswith("h.") and _in_block(name) in IGNORED


def _not_gpt2(names) -> str:
    sample = ", ".join(repr(n) for n in sorted(names)[:4]) or "no tensors"
    return (
        "this does not look like a GPT-2 checkpoint: expected tensors such as 'wte.weight' and "
        f"'h.0.attn.c_attn.weight', found {sample}"
    )


def _check_tensors(found: dict[str, tuple], dtypes: dict[str, str], cfg: dict, with_head: bool) -> None:
    """Every expected tensor present with the right shape, and nothing else (but buffers)."""
    expected = expected_shapes(cfg, tied=not with_head)
    present = [n for n in expected if n in found]
    if not any(n != LM_HEAD for n in present):  # lm_head alone is common to many architectures
        raise WeightsError(_not_gpt2(found))
    problems = []
    missing = [n for n in expected if n not in found]
    if missing:
        problems.append(f"missing {_listing(missing)}")
    unexpected = [n for n in found if n not in expected and not _is_ignored(n)]
    if unexpected:
        problems.append(f"unexpected {_listing(unexpected)}")
    for name in present:
        if tuple(found[name]) != expected[name]:
            problems.append(f"{name!r} has shape {tuple(found[name])}, expected {expected[name]}")
        elif dtypes[name] not in FLOAT_DTYPES:
            problems.append(f"{name!r} holds {dtypes[name]}, not floating-point numbers")
    if problems:
        summary = f"GPT-2 with {cfg['n_layers']} layers, emb_dim {cfg['emb_dim']}"
        raise WeightsError(f"the checkpoint does not match its config ({summary}): " + "; ".join(problems))


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{len(names)} tensor(s): {shown}{more}"


def _check_memory(cfg: dict, tied: bool) -> None:
    needed = 4 * total_parameters(cfg, tied=tied)  # fp32
    available = available_memory_bytes()
    if needed > available:
        raise WeightsError(
            f"the weights need {needed / 2**30:.2f} GiB in fp32, more than the {available / 2**30:.2f} GiB "
            "of memory available; choose a smaller GPT-2"
        )


# --- Converting -------------------------------------------------------------------------


def _course_state_dict(f, names: dict[str, str], cfg: dict, tied: bool) -> dict[str, torch.Tensor]:
    """Read each tensor once, in fp32, laid out as the course's modules expect."""

    def get(name: str) -> torch.Tensor:
        tensor = f.get_tensor(names[name]).to(torch.float32)
        if _in_block(name) in TRANSPOSED:
            tensor = tensor.t().contiguous()  # Conv1D (in, out) -> nn.Linear (out, in)
        return tensor

    state = {ours: get(hf) for hf, ours in TOP_LEVEL.items()}
    for i in range(cfg["n_layers"]):
        for key, ours in BLOCK.items():
            tensor = get(f"h.{i}.{key}")
            if isinstance(ours, tuple):
                # After the transpose c_attn.weight is (3*emb_dim, emb_dim): rows are q | k | v.
                # The three parts stay views of that one tensor (chunks of a contiguous tensor
                # need no copy), so the loaded W_query, W_key and W_value are stacked in memory
                # as a freshly built model's are, and generation's fused projection applies.
                for target, part in zip(ours, tensor.chunk(3, dim=0)):
                    state[f"trf_blocks.{i}.{target}"] = part
            else:
                state[f"trf_blocks.{i}.{ours}"] = tensor
    state["out_head.weight"] = state["tok_emb.weight"] if tied else get(LM_HEAD)
    return state


def _build(cfg: dict, state: dict[str, torch.Tensor], tied: bool) -> GPTModel:
    """A GPTModel holding `state`, built without random initialisation.

    Built on the meta device (no memory, no use of the global RNG), then the loaded
    tensors become its parameters: peak memory is one copy of the weights.
    """
    with torch.device("meta"):
        model = GPTModel(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    if tied:
        model.out_head.weight = model.tok_emb.weight  # one matrix, as in GPT-2
    # The causal masks are non-persistent buffers, so not in `state`: make them as
    # MultiHeadAttention does (True above the diagonal), one shared by every layer.
    t = cfg["context_length"]
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    for block in model.trf_blocks:
        block.att.mask = mask
    left = [name for name, p in [*model.named_parameters(), *model.named_buffers()] if p.is_meta]
    assert not left, f"not loaded: {left}"
    model.requires_grad_(False)
    return model.eval()


def _load(path: Path, cfg: dict | None, max_bytes: int | None, untied: bool = False) -> GPTModel:
    """`untied`: the config says out_head is not wte, so the file must hold lm_head.weight."""
    _check_size(path, max_bytes)
    _check_safetensors_header(path)
    with _open(path) as f:
        names = _unprefixed(f.keys())
        found = {name: tuple(f.get_slice(key).get_shape()) for name, key in names.items()}
        dtypes = {name: f.get_slice(key).get_dtype() for name, key in names.items()}
        cfg = infer_gpt2_config(found) if cfg is None else cfg
        _check_tensors(found, dtypes, cfg, with_head=untied or LM_HEAD in found)
        tied = LM_HEAD not in found
        if not tied and not untied:
            # A head saved beside wte is usually the same matrix; keep it only if it differs.
            tied = torch.equal(f.get_tensor(names[LM_HEAD]), f.get_tensor(names["wte.weight"]))
        _check_memory(cfg, tied)
        state = _course_state_dict(f, names, cfg, tied)
    return _build(cfg, state, tied)


# --- Public loaders ---------------------------------------------------------------------


def load_gpt2(source, max_bytes: int | None = None) -> GPTModel:
    """A GPT-2 checkpoint directory (config.json + model.safetensors) as the course's GPTModel.

    Returns the model in eval mode with gradients off. Raises WeightsError, with a
    message for the user, for missing files, pickles, corrupt files, other architectures,
    and files over `max_bytes`. A path to a .safetensors file is loaded with the
    config.json beside it if there is one, else as `load_gpt2_file` does.
    """
    source = Path(source)
    if source.is_file():
        beside = source.parent / "config.json"
        return load_gpt2_file(source, _read_json(beside) if beside.is_file() else None, max_bytes)
    if not source.is_dir():
        raise WeightsError(f"{source} does not exist; use download_gpt2 to fetch a published GPT-2")
    weights = source / "model.safetensors"
    if not weights.is_file():
        pickles = sorted(p.name for p in source.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            only = f"no model.safetensors in {source}, only {', '.join(pickles)}. "
            raise WeightsError(only + _pickle_message(source / pickles[0]))
        if (source / "model.safetensors.index.json").is_file():
            raise WeightsError(f"{source} holds a sharded checkpoint; gptviz reads a single model.safetensors")
        raise WeightsError(f"no model.safetensors in {source}: {_DIRECTORY_HOLDS}")
    if not (source / "config.json").is_file():
        raise WeightsError(
            f"no config.json in {source}: {_DIRECTORY_HOLDS} "
            "(load_gpt2_file loads a lone model.safetensors, inferring its config)"
        )
    hf = _read_json(source / "config.json")
    return _load(weights, gpt2_config(hf), max_bytes, untied=_untied(hf))


def load_gpt2_file(path, config: dict | None = None, max_bytes: int | None = None) -> GPTModel:
    """One GPT-2 .safetensors file (e.g. an upload) as the course's GPTModel.

    `config`: the checkpoint's config.json as a dict, or a course cfg dict; without it the
    sizes are inferred from the tensors' shapes and n_heads = emb_dim // 64 (see
    `infer_gpt2_config`). `max_bytes`: refuse larger files before reading them.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    if config is None:
        return _load(path, None, max_bytes)
    if "emb_dim" in config:  # already a course cfg; GPT-2's c_attn always has a bias
        return _load(path, _validated({**config, "qkv_bias": True}), max_bytes)
    return _load(path, gpt2_config(config), max_bytes, untied=_untied(config))


def _untied(hf: dict) -> bool:
    # GPT-2 ties out_head to wte; a config can say otherwise, and then lm_head is required.
    return not hf.get("tie_word_embeddings", True)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise WeightsError(f"{path} does not hold a JSON object")
    return data


# --- Saving -----------------------------------------------------------------------------


def save_gpt2(model: GPTModel, directory, layout: str = "hf") -> Path:
    """Write `model` as config.json + model.safetensors that transformers' GPT2LMHeadModel loads.

    `layout="hf"` prefixes names with `transformer.` as save_pretrained does; "published"
    uses the bare names of the files on the hub. A model built with qkv_bias=False gets
    zero query/key/value biases, which compute the same thing.
    """
    from safetensors.torch import save_file

    if layout not in ("hf", "published"):
        raise ValueError(f"layout is 'hf' or 'published', not {layout!r}")
    if not isinstance(model, GPTModel) or model.parts != ALL_PARTS:
        raise WeightsError("only a GPTModel with every part real can be saved as GPT-2")
    cfg = config_of(model)
    tied = model.out_head.weight is model.tok_emb.weight or torch.equal(model.out_head.weight, model.tok_emb.weight)
    state = _hf_state_dict(model, cfg, tied)
    prefix = "transformer." if layout == "hf" else ""
    state = {(name if name == LM_HEAD else prefix + name): t for name, t in state.items()}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config(cfg, tied), indent=2) + "\n", encoding="utf-8")
    return directory


def _hf_state_dict(model: GPTModel, cfg: dict, tied: bool) -> dict[str, torch.Tensor]:
    ours = model.state_dict()

    def put(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if _in_block(name) in TRANSPOSED:
            tensor = tensor.t()  # nn.Linear (out, in) -> Conv1D (in, out)
        return tensor.detach().to(torch.float32).contiguous().clone()

    state = {hf: put(hf, ours[name]) for hf, name in TOP_LEVEL.items()}
    for i in range(cfg["n_layers"]):
        for key, name in BLOCK.items():
            if isinstance(name, tuple):
                parts = [ours.get(f"trf_blocks.{i}.{n}") for n in name]
                if parts[0] is None:  # qkv_bias=False: a zero bias adds nothing
                    parts = [torch.zeros(cfg["emb_dim"])] * 3
                tensor = torch.cat(parts, dim=0)  # q | k | v stacked as rows
            else:
                tensor = ours[f"trf_blocks.{i}.{name}"]
            state[f"h.{i}.{key}"] = put(f"h.{i}.{key}", tensor)
    if not tied:
        state[LM_HEAD] = put(LM_HEAD, ours["out_head.weight"])
    return state


def hf_config(cfg: dict, tied: bool) -> dict:
    """The Hugging Face GPT-2 config.json of a course config (also `GPT2Config(**hf_config(...))`)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "n_embd": cfg["emb_dim"],
        "n_head": cfg["n_heads"],
        "n_layer": cfg["n_layers"],
        "n_positions": cfg["context_length"],
        "n_ctx": cfg["context_length"],
        "vocab_size": cfg["vocab_size"],
        "embd_pdrop": cfg["drop_rate"],
        "attn_pdrop": cfg["drop_rate"],
        "resid_pdrop": cfg["drop_rate"],
        "tie_word_embeddings": tied,
    }


# --- Downloading ------------------------------------------------------------------------


def repo_id(size: str) -> str:
    """The hub repository of a GPT-2 size: small/medium/large/xl, 124M..1558M, or 'gpt2-medium'."""
    key = str(size).strip().lower().split(" ")[0].removeprefix("gpt2-")
    key = _SIZE_ALIASES.get(key, key)
    if key not in REPOS:
        raise WeightsError(f"unknown GPT-2 size {size!r}; choose from {', '.join(REPOS)}")
    return REPOS[key]


def _network_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    errors: list[type[BaseException]] = [LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):  # whichever HTTP client this huggingface_hub uses
        try:
            errors.append(importlib.import_module(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _progress_bar(progress):
    """A tqdm class that draws nothing and reports (description, done, total) to `progress`."""
    from tqdm.std import tqdm

    class _Silent:
        def write(self, _):
            pass

        def flush(self):
            pass

    class Reporter(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)  # huggingface_hub's own bars take a name; tqdm does not
            kwargs.update(file=_Silent(), disable=False)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            shown = super().update(n)
            progress(self.desc, self.n, self.total)
            return shown

    return Reporter


def download_gpt2(size: str = "small", cache_dir=None, progress=None, endpoint: str | None = None) -> Path:
    """Fetch a published GPT-2's config.json and model.safetensors; return their directory.

    Files already in the cache are not fetched again. `progress(description, done, total)`
    is called as bytes arrive, possibly from download threads (a Streamlit caller must
    not draw from there directly). Raises WeightsError when the hub cannot be reached.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    repo = repo_id(size)
    try:
        path = snapshot_download(
            repo_id=repo,
            allow_patterns=list(FILES),
            cache_dir=cache_dir,
            endpoint=endpoint,
            tqdm_class=_progress_bar(progress) if progress else None,
        )
    except _network_errors() as error:
        raise WeightsError(
            f"offline: could not reach the Hugging Face hub to fetch {repo}; download the files elsewhere "
            f"({', '.join(FILES)} from https://huggingface.co/{repo}) and point to the directory"
        ) from error
    except HfHubHTTPError as error:
        raise WeightsError(f"the Hugging Face hub refused {repo}: {error}") from error
    path = Path(path)
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise WeightsError(f"the download of {repo} is incomplete: {', '.join(missing)} missing in {path}")
    return path
