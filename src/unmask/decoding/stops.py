"""Where answers end: EOS / end-of-turn positions in generated tokens."""

from __future__ import annotations

import torch
from torch import Tensor


def stop_mask(tokens: Tensor, stop_ids: tuple[int, ...]) -> Tensor:
    """[B, G] bool: positions holding an EOS/EOT id."""
    return torch.isin(tokens, torch.tensor(stop_ids, device=tokens.device))


def first_stop(tokens: Tensor, stop_ids: tuple[int, ...]) -> Tensor:
    """Index of the first EOS/EOT per row of [B, G] (G when there is none)."""
    g = tokens.shape[1]
    positions = torch.arange(g, device=tokens.device).expand_as(tokens)
    return torch.where(stop_mask(tokens, stop_ids), positions, g).min(dim=-1).values
