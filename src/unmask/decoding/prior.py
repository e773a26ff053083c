"""d2Cache's certainty prior: favour masks surrounded by decoded tokens (quasi left-to-right order)."""

from __future__ import annotations

import torch
from torch import Tensor


def certainty_density(decoded: Tensor, sigma: float) -> Tensor:
    """Gaussian (std sigma) smoothing of a [B, G] decoded indicator, normalised by the kernel sum.

    Positions left of the generation span (the prompt) count as decoded; right of it as not.
    """
    g = decoded.shape[-1]
    radius = max(1, int(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, device=decoded.device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    left = torch.ones(decoded.shape[0], radius, dtype=torch.float64, device=decoded.device)
    right = torch.zeros_like(left)
    padded = torch.cat([left, decoded.double(), right], dim=-1)
    smoothed = torch.nn.functional.conv1d(padded.unsqueeze(1), kernel.view(1, 1, -1)).squeeze(1)
    return smoothed[:, :g] / kernel.sum()
