"""How many masks to commit per step (LLaDA's even split, Dream's eps schedule) and block ranges."""

from __future__ import annotations

import torch
from torch import Tensor


def blocks(start: int, gen_length: int, block_length: int) -> list[tuple[int, int]]:
    return [(start + i, start + i + block_length) for i in range(0, gen_length, block_length)]


def linear_counts(masks: Tensor, steps: int) -> Tensor:
    """LLaDA: spread each sequence's masks evenly over `steps`, remainder to the earliest steps -> [B, steps]."""
    base = (masks // steps).unsqueeze(1).expand(-1, steps).clone()
    remainder = masks % steps
    base += (torch.arange(steps, device=masks.device) < remainder.unsqueeze(1)).long()
    return base


def _eps_ratio32(step: int, steps: int, eps: float) -> Tensor:
    """1 - t[i+1] / t[i] with t = linspace(1, eps, steps + 1), in float32 as Dream's code computes it."""
    t = torch.linspace(1, eps, steps + 1, dtype=torch.float32)
    return 1 - t[step + 1] / t[step]


def eps_count(masks: Tensor, step: int, steps: int, eps: float) -> Tensor:
    """Dream: at step i commit int(n_mask * (1 - t[i+1] / t[i])) (float32, as the official code); the last step all."""
    if step == steps - 1:
        return masks.clone()
    return (masks.float() * _eps_ratio32(step, steps, eps)).long()


def eps_ratio(step: int, steps: int, eps: float) -> float:
    """Dream's `origin` rule commits each mask independently with this probability."""
    if step == steps - 1:
        return 1.0
    return float(_eps_ratio32(step, steps, eps))
