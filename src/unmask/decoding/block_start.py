"""Fast-dLLM's Dream block loop: a block's refresh step commits its first mask and nothing else.

Dream predicts position p from row p - 1. Fast-dLLM's Dream code fills the block's first
position from the refresh (full) forward's logits, whatever its confidence, and its cached
steps then feed rows from the block start on, so they never need row s - 1 again.
"""

from __future__ import annotations

import torch
from torch import Tensor


def first_mask(candidate: Tensor) -> Tensor:
    """[B, T] bool: the leftmost candidate of each sequence (the block's first position at a block start)."""
    has = candidate.any(-1, keepdim=True)
    first = candidate.int().argmax(-1, keepdim=True)
    return torch.zeros_like(candidate).scatter_(1, first, True) & has
