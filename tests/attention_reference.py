"""Attention weights computed by torch itself, to check the app's against."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def sdpa_weights(model, norm1, layer: int) -> np.ndarray:
    """(B, n_heads, T, T) weights of `layer` by torch's scaled_dot_product_attention.

    With values = identity, its output is the weight matrix itself. q and k come from the
    block's norm1 output (B, T, emb_dim) and the layer's W_query and W_key.
    """
    att = model.trf_blocks[layer].att
    x = torch.from_numpy(np.array(norm1))
    B, T, _ = x.shape
    with torch.no_grad():
        q = att.W_query(x).view(B, T, att.num_heads, att.head_dim).transpose(1, 2)
        k = att.W_key(x).view(B, T, att.num_heads, att.head_dim).transpose(1, 2)
        eye = torch.eye(T).expand(B, att.num_heads, T, T)
        return F.scaled_dot_product_attention(q, k, eye, is_causal=True).numpy()
