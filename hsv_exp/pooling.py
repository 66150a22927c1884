"""Sequence states from token states: the mean over real tokens, or the first ([CLS]) token."""

from __future__ import annotations

import torch


def token_mask(attention_mask: torch.Tensor, special_tokens_mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, seq) bool: tokens that are neither padding nor special ([CLS], [SEP], <s>, ...)."""
    mask = attention_mask.bool()
    if special_tokens_mask is not None:
        mask = mask & ~special_tokens_mask.bool()
    return mask


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """hidden (batch, seq, d), mask (batch, seq) -> (batch, d).

    mean: average over masked-in tokens; a row with none (an empty text: only special tokens)
    pools to zeros. No fallback to the special tokens: the mask is the caller's (`token_mask`).
    cls: the first token's state.
    """
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
