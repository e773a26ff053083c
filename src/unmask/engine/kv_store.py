"""Preallocated per-layer stores for the whole canvas, updated in place by row index."""

from __future__ import annotations

import torch
from torch import Tensor

from .rows import Rows


class LayerKV:
    """Post-RoPE keys and values [B, H_kv, T, D] of one layer (positions never move, so keys stay valid).

    With `query_heads`, it also keeps the post-RoPE queries [B, H, T, D] of every row as last computed
    (Elastic-Cache rebuilds a tracked token's previous attention from its cached query).
    """

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, dtype, device, query_heads: int = 0):
        self.k = torch.zeros(batch, heads, length, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.q = torch.zeros(batch, query_heads, length, head_dim, dtype=dtype, device=device) if query_heads else None

    @classmethod
    def of(cls, k: Tensor, v: Tensor, q: Tensor | None) -> "LayerKV":
        """A store over existing tensors (a batch's, `engine.slots`)."""
        kv = cls.__new__(cls)
        kv.point_to(k, v, q)
        return kv

    def point_to(self, k: Tensor, v: Tensor, q: Tensor | None) -> None:
        """Use these tensors (views of a batch's store, `engine.slots`) from now on."""
        self.k, self.v, self.q = k, v, q

    def write(self, rows: Rows, k: Tensor, v: Tensor, q: Tensor | None = None) -> tuple[Tensor, Tensor]:
        full = rows.span == (0, self.k.shape[2])
        stores = [(self.k, k), (self.v, v)] + ([(self.q, q)] if self.q is not None and q is not None else [])
        for store, value in stores:
            if full:
                store.copy_(value)  # contiguous copies: attention over strided keys would copy every step
            else:
                rows.scatter_(store, value, dim=2)
        return self.k, self.v


class CanvasStore:
    """Everything a request caches: K/V per layer, plus the extra stores some methods ask for."""

    def __init__(self, cfg, batch: int, length: int, dtype, device, *, layer_inputs: bool = False, queries: bool = False):
        query_heads = cfg.num_heads if queries else 0
        make = lambda: LayerKV(batch, cfg.num_kv_heads, length, cfg.head_dim, dtype, device, query_heads)  # noqa: E731
        self.kv = [make() for _ in range(cfg.num_layers)]
        shape = (batch, length, cfg.hidden_size)
        # Elastic-Cache: the input hidden states of every layer, to refresh deeper layers from.
        self.inputs = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.num_layers)] if layer_inputs else None

    @classmethod
    def of(cls, kv: list[LayerKV], inputs: list[Tensor] | None) -> "CanvasStore":
        """A store over existing per-layer stores (a batch's, `engine.slots`)."""
        store = cls.__new__(cls)
        store.kv, store.inputs = kv, inputs
        return store
