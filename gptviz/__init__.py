"""gptviz: follow a text through a GPT, step by step, with real numbers."""

from .build import GPT, PRETRAINED, SKELETON, BuiltModel, ModelSpec, build_model
from .config import (
    GPT_CONFIG_124M,
    PRESETS,
    ConfigError,
    config_key,
    count_parameters,
    total_parameters,
    validate_config,
)
from .generation import generate_text_simple
from .models import (
    ALL_PARTS,
    PARTS,
    GELU,
    DummyGPTModel,
    DummyLayerNorm,
    DummyTransformerBlock,
    FeedForward,
    GPTModel,
    KVCache,
    LayerNorm,
    MultiHeadAttention,
    PlaceholderSublayer,
    Recorder,
    TransformerBlock,
)
from .tokenizer import ENDOFTEXT, ENDOFTEXT_ID, TokenGroup, decode, encode, get_tokenizer, token_groups
from .trace import Trace, trace
from .weights import WeightsError, download_gpt2, load_gpt2, load_gpt2_file, save_gpt2
