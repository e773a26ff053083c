"""Preallocated per-layer stores for the whole canvas, updated in place by row index."""

from __future__ import annotations

import torch
from torch import Tensor

from .rows import Rows


class LayerKV:
    """Post-RoPE keys and values [B, H_kv, T, D] of one layer (positions never move, so keys stay valid)."""

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, dtype, device):
        self.k = torch.zeros(batch, heads, length, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)

    def write(self, rows: Rows, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if rows.span == (0, self.k.shape[2]):
            self.k.copy_(k)  # contiguous copies: attention over strided keys would copy every step
            self.v.copy_(v)
        else:
            rows.scatter_(self.k, k, dim=2)
            rows.scatter_(self.v, v, dim=2)
        return self.k, self.v


class CanvasStore:
    """Everything a request caches: K/V per layer, plus the extra stores some methods ask for."""

    def __init__(self, cfg, batch: int, length: int, dtype, device, *, layer_inputs: bool = False, branches: bool = False):
        make = lambda: LayerKV(batch, cfg.num_kv_heads, length, cfg.head_dim, dtype, device)  # noqa: E731
        self.kv = [make() for _ in range(cfg.num_layers)]
        shape = (batch, length, cfg.hidden_size)
        # Elastic-Cache: the input hidden states of every layer, to refresh deeper layers from.
        self.inputs = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)] if layer_inputs else None
        # dLLM-Cache: attention-branch and FFN-branch outputs, reused for rows not recomputed.
        self.attn_out = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)] if branches else None
        self.ffn_out = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)] if branches else None
