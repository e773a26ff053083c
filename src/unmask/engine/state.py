"""Per-request engine state: the canvas, its positions and masks, and the caches."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..models.scratch import Scratch
from .kv_store import CanvasStore
from .layer0 import Layer0Rows
from .rows import Rows


@dataclass
class CanvasState:
    canvas: Tensor  # [B, T] token ids (left-padded prompt ++ generation)
    valid: Tensor  # [B, T] bool: real tokens (not padding); only valid rows are attention keys
    store: CanvasStore
    cos: Tensor  # [B, T, D] rotary tables for the whole canvas
    sin: Tensor
    key_mask: Tensor | None = None  # [B, 1, 1, T] or None when every key is valid
    # [B, T] bool: positions still to be decoded. The loop clears a position when it commits it (even to
    # the [MASK] id, which a method without mask-logit suppression may commit); a policy may clear masks it
    # stops decoding (Elastic-Cache's EOS cut), which then stay attention keys.
    pending: Tensor | None = None
    # Prompt rows whose input is an embedding (image features), not their token's: `embeds` [B, T, d] holds
    # it where `from_embeds` [B, T] is true. None for text-only canvases (the forward then only embeds ids).
    embeds: Tensor | None = None
    from_embeds: Tensor | None = None
    embeds_end: int = 0  # canvas rows >= this never take an embedding (the generated region)
    # Layer 0's Q/K/V of every row, kept across full forwards (`engine.layer0`); None: recomputed each time.
    layer0: Layer0Rows | None = None
    scratch: Scratch = field(default_factory=Scratch)  # the layers' reusable temporaries (`models.scratch`)

    @property
    def batch(self) -> int:
        return self.canvas.shape[0]

    @property
    def length(self) -> int:
        return self.canvas.shape[1]

    def all_rows(self) -> Rows:
        return Rows.range(0, self.length, self.batch, self.canvas.device)

    def input_rows(self, module, rows: Rows) -> Tensor:
        """Layer-0 input [B, R, d] of `rows`: the token embedding, or the given embedding where one was attached."""
        h = module.embed(rows.gather(self.canvas))
        if self.embeds is None or (rows.span is not None and rows.span[0] >= self.embeds_end):
            return h
        return torch.where(rows.gather(self.from_embeds).unsqueeze(-1), rows.gather(self.embeds), h)

    def attach_embeds(self, width: int, prompts: list[tuple[Tensor, Tensor] | None]) -> None:
        """Prompt rows from embeddings: per sequence None or (embeds [L, d], from_embeds [L] bool) of its
        left-padded prompt, which ends at canvas position `width`."""
        if all(p is None or not bool(p[1].any()) for p in prompts):
            return
        b, t = self.canvas.shape
        dtype = self.store.kv[0].k.dtype
        d = next(p[0].shape[-1] for p in prompts if p is not None)
        self.embeds = torch.zeros(b, t, d, dtype=dtype, device=self.canvas.device)
        self.from_embeds = torch.zeros(b, t, dtype=torch.bool, device=self.canvas.device)
        for i, prompt in enumerate(prompts):
            if prompt is None:
                continue
            embeds, rows = prompt
            self.embeds[i, width - len(rows) : width] = embeds.to(dtype)
            self.from_embeds[i, width - len(rows) : width] = rows
        self.embeds_end = width

    def refresh_key_mask(self) -> None:
        """Recompute the attention key mask from `valid` (padding keys are never attended)."""
        self.key_mask = None if bool(self.valid.all()) else self.valid[:, None, None, :]


def make_state(module, canvas: Tensor, valid: Tensor, *, layer_inputs=False, queries=False, reuse_layer0=False) -> CanvasState:
    """A request's state; `reuse_layer0` keeps layer 0's Q/K/V for later full forwards where that is exact."""
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # rotary positions: padding does not count
    cos, sin = (t.squeeze(1) for t in module.rotary.lookup(positions))
    store = CanvasStore(
        module.cfg, canvas.shape[0], canvas.shape[1], module.embed.weight.dtype, canvas.device,
        layer_inputs=layer_inputs, queries=queries,
    )
    state = CanvasState(canvas=canvas, valid=valid.clone(), store=store, cos=cos, sin=sin)
    if reuse_layer0 and Layer0Rows.supported(canvas.device, module.embed.weight.dtype, _qkv_shape(module.layers[0])):
        state.layer0 = Layer0Rows(canvas)
    state.refresh_key_mask()
    return state


def _qkv_shape(layer) -> tuple[int, int]:
    """[out, in] of a layer's stacked q/k/v projection."""
    return sum(p.out_features for p in (layer.q_proj, layer.k_proj, layer.v_proj)), layer.q_proj.in_features
