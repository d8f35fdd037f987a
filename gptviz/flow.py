"""The path a batch takes through the model, stage by stage, with the shape at each stage.

Pure data from the config and the batch size, no model needed: the Home page draws it as
a diagram and the Model page lists it beside the real activations.
"""

from __future__ import annotations

from dataclasses import dataclass

from .build import SKELETON
from .models import ALL_PARTS


@dataclass(frozen=True)
class Stage:
    name: str  # what a learner calls it
    code: str  # the line of the forward pass that computes it
    shape: tuple  # shape of the data after this stage
    page: str  # the app page that shows it

    @property
    def shape_text(self) -> str:
        return " x ".join(str(s) for s in self.shape)


def stages(cfg: dict, batch_size: int, n_tokens: int, kind: str = SKELETON, parts=ALL_PARTS) -> list[Stage]:
    B, T, D, V = batch_size, n_tokens, cfg["emb_dim"], cfg["vocab_size"]
    n = cfg["n_layers"]
    if kind == SKELETON:
        block = f"{n} x DummyTransformerBlock (returns its input)"
    elif frozenset(parts) == ALL_PARTS:
        block = f"{n} x TransformerBlock ({cfg['n_heads']} heads)"
    else:
        block = f"{n} x TransformerBlock (real: {', '.join(sorted(parts)) or 'none'})"
    real_norm = kind != SKELETON and "layer_norm" in parts
    return [
        Stage("text", "txt1 = ...", (B,), "Tokens"),
        Stage("token ids", "tokenizer.encode(txt)", (B, T), "Tokens"),
        Stage("token embeddings", "tok_embeds = self.tok_emb(in_idx)", (B, T, D), "Embeddings"),
        Stage("position embeddings", "pos_embeds = self.pos_emb(torch.arange(seq_len))", (T, D), "Embeddings"),
        Stage("sum + dropout", "x = self.drop_emb(tok_embeds + pos_embeds)", (B, T, D), "Embeddings"),
        Stage(block, "x = self.trf_blocks(x)", (B, T, D), "Model" if kind == SKELETON else "Attention"),
        Stage("final norm" + ("" if real_norm else " (DummyLayerNorm: returns its input)"),
              "x = self.final_norm(x)", (B, T, D), "Model"),
        Stage("logits", "logits = self.out_head(x)", (B, T, V), "Predictions"),
    ]
