"""Which canvas rows a forward computes: a shared contiguous span or per-sequence index lists."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Rows:
    """Row positions [B, R], sorted per sequence; `span` marks the same contiguous range for all.

    Per-sequence lists of unequal length are padded by repeating their last row:
    computing a row twice gives the same values, so duplicates are harmless.
    """

    index: Tensor
    span: tuple[int, int] | None = None

    @classmethod
    def range(cls, start: int, end: int, batch: int, device: torch.device | str = "cpu") -> "Rows":
        index = torch.arange(start, end, device=device).expand(batch, end - start)
        return cls(index, (start, end))

    @classmethod
    def from_mask(cls, mask: Tensor) -> "Rows":
        """Rows where a [B, T] bool mask is true (each sequence must select at least one row)."""
        counts = mask.sum(-1)
        if bool((counts == 0).any()):
            raise ValueError("every sequence needs at least one row")
        width = int(counts.max())
        t = mask.shape[-1]
        # Sort selected positions first (stable keeps them ascending), then pad with the last one.
        keys = torch.where(mask, torch.arange(t, device=mask.device), t + torch.arange(t, device=mask.device))
        order = keys.argsort(dim=-1)[:, :width]
        last = order.gather(1, (counts - 1).unsqueeze(1))
        slot = torch.arange(width, device=mask.device).expand_as(order)
        index = torch.where(slot < counts.unsqueeze(1), order, last)
        if bool((counts == width).all()) and width:
            first = int(index[0, 0])
            if bool((index == torch.arange(first, first + width, device=mask.device)).all()):
                return cls(index, (first, first + width))
        return cls(index)

    @property
    def size(self) -> int:
        return self.index.shape[1]

    def gather(self, x: Tensor) -> Tensor:
        """Select rows of x [B, T, ...] -> [B, R, ...]."""
        if self.span is not None:
            return x[:, self.span[0] : self.span[1]]
        idx = self.index.view(*self.index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
        return torch.gather(x, 1, idx)

    def scatter_(self, target: Tensor, values: Tensor, dim: int = 1) -> None:
        """Write values [.., R, ..] into target [.., T, ..] along `dim` (1 for [B,T,d], 2 for [B,H,T,D])."""
        if self.span is not None:
            target.narrow(dim, self.span[0], self.span[1] - self.span[0]).copy_(values)
            return
        shape = [1] * target.dim()
        shape[0], shape[dim] = self.index.shape
        idx = self.index.view(shape).expand(values.shape)
        target.scatter_(dim, idx, values)

    def mask(self, length: int) -> Tensor:
        """[B, T] bool: which canvas rows are in this set."""
        out = torch.zeros(self.index.shape[0], length, dtype=torch.bool, device=self.index.device)
        return out.scatter_(1, self.index, True)

    def locate(self, positions: Tensor) -> Tensor:
        """Index within these rows of each canvas position [B, P] (positions must be members)."""
        if self.span is not None:
            return positions - self.span[0]
        return torch.searchsorted(self.index, positions)
