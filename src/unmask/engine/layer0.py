"""Layer 0's queries, keys and values kept across full forwards.

Layer 0's input of a row is its token's embedding (or a fixed image feature), so between two
forwards over every row only the rows whose token changed get new layer-0 Q/K/V; the others are
the same numbers. A full forward therefore projects only a span covering the changed rows and
reuses the rest. The deeper layers see every row's new attention and are recomputed as before.

The reuse is exact only where projecting a few rows gives the same bits as projecting them
within all rows. In float32 on CPU this holds once a product has at least 16 rows, not below (a
1-row product takes another kernel), so spans are widened to at least `MIN_ROWS`; in bfloat16 and
on other devices every full forward projects every row (`models.layers.subset_rows_exact`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models.layers import SUBSET_MIN_ROWS as MIN_ROWS  # smallest row count projected at once
from ..models.layers import subset_rows_exact


class Layer0Rows:
    """Rotated layer-0 queries [B,H,T,D], keys and values [B,Hkv,T,D] of every canvas row, with the
    token each row was computed from (-1: not yet computed)."""

    def __init__(self, canvas: Tensor):
        self.ids = torch.full_like(canvas, -1)
        self.q: Tensor | None = None
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @staticmethod
    def supported(device: torch.device, dtype: torch.dtype, weight_shape: tuple[int, int]) -> bool:
        """Where a row subset of a product through a weight of `weight_shape` gives the same bits as
        those rows of the full product (checked, and probed once per shape on this machine)."""
        return subset_rows_exact(device, dtype, MIN_ROWS, weight_shape)

    def qkv(self, layer, h: Tensor, canvas: Tensor, cos: Tensor, sin: Tensor, scratch=None) -> tuple[Tensor, Tensor, Tensor]:
        """Layer 0's q, k, v for every row, given its input `h` [B,T,d] and the rotary tables
        [B,1,T,D] of every row; projects only the rows whose token differs from the last call
        (with `scratch` for the projection's temporaries: what is kept here is copied out of it)."""
        t = canvas.shape[1]
        changed = (canvas != self.ids).any(0).nonzero()
        if self.q is not None and changed.numel() == 0:
            return self.q, self.k, self.v
        if self.q is None:
            lo, hi = 0, t
        else:
            lo, hi = int(changed[0]), int(changed[-1]) + 1
            hi = min(t, max(hi, lo + MIN_ROWS))
            lo = max(0, min(lo, hi - MIN_ROWS))
        if hi - lo > t // 2:  # most rows: the full product (also the first call)
            lo, hi = 0, t
        part = slice(lo, hi)
        q, k, v = layer.qkv(layer.attn_norm(h[:, part]), cos[:, :, part], sin[:, :, part], scratch)
        if self.q is None:
            own = torch.contiguous_format
            self.q, self.k, self.v = q.clone(memory_format=own), k.clone(memory_format=own), v.clone(memory_format=own)
        else:
            self.q[:, :, part] = q
            self.k[:, :, part] = k
            self.v[:, :, part] = v
        self.ids[:, part] = canvas[:, part]
        return self.q, self.k, self.v
