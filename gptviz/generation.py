"""Turning logits back into text: the course's greedy loop."""

from __future__ import annotations

import torch


def generate_text_simple(model, idx, max_new_tokens, context_size):
    """The course's greedy decoding: append the most likely next token, max_new_tokens times.

    idx is (batch, n_tokens); the context is cropped to the last `context_size` tokens.
    """
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]  # crop to the supported context
        with torch.no_grad():
            logits = model(idx_cond)
        logits = logits[:, -1, :]  # only the last position predicts the next token
        probas = torch.softmax(logits, dim=-1)  # (batch, vocab_size)
        idx_next = torch.argmax(probas, dim=-1, keepdim=True)  # (batch, 1)
        idx = torch.cat((idx, idx_next), dim=1)  # (batch, n_tokens+1)
    return idx
