"""Per-request engine state: the canvas, its positions and masks, and the caches."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .kv_store import CanvasStore
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

    @property
    def batch(self) -> int:
        return self.canvas.shape[0]

    @property
    def length(self) -> int:
        return self.canvas.shape[1]

    def all_rows(self) -> Rows:
        return Rows.range(0, self.length, self.batch, self.canvas.device)

    def refresh_key_mask(self) -> None:
        """Recompute the attention key mask from `valid` (padding keys are never attended)."""
        self.key_mask = None if bool(self.valid.all()) else self.valid[:, None, None, :]


def make_state(module, canvas: Tensor, valid: Tensor, *, layer_inputs=False, queries=False) -> CanvasState:
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # rotary positions: padding does not count
    cos, sin = (t.squeeze(1) for t in module.rotary.lookup(positions))
    store = CanvasStore(
        module.cfg, canvas.shape[0], canvas.shape[1], module.embed.weight.dtype, canvas.device,
        layer_inputs=layer_inputs, queries=queries,
    )
    state = CanvasState(canvas=canvas, valid=valid.clone(), store=store, cos=cos, sin=sin)
    state.refresh_key_mask()
    return state
