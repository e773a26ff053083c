"""The partial forward: execute a StepPlan against the request's stores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .plan import StepPlan
from .rows import Rows
from .state import CanvasState


@dataclass
class StepOutput:
    logits: Tensor  # [B, N, V] for plan.logit_positions
    layer_rows: list[int]  # rows computed at each layer
    refreshed_layers: list[float]  # per layer, the fraction of sequences that recomputed every row


def source_positions(module, positions: Tensor) -> Tensor:
    """Row whose hidden state predicts each position (Dream predicts token i from row i - 1)."""
    return (positions - 1).clamp(min=0) if module.cfg.shift_logits else positions


def _widen(state: CanvasState, rows: Rows, h: Tensor, layer: int, switch: Tensor) -> tuple[Rows, Tensor]:
    """Switch sequences in `switch` [B] to all rows: their input is the cached layer input with fresh rows replaced."""
    inputs = state.store.inputs
    if inputs is None:
        raise RuntimeError("refreshing deeper layers needs the layer-input store (needs_layer_inputs=True)")
    hidden = inputs[layer].clone()
    rows.scatter_(hidden, h)
    wide = Rows.from_mask(rows.mask(state.length) | switch.unsqueeze(1))
    return wide, wide.gather(hidden)


def run_plan(module, state: CanvasState, plan: StepPlan) -> StepOutput:
    """One (possibly partial) forward. Rows not in the plan keep their cached K/V."""
    t, b = state.length, state.batch
    rows = plan.rows
    if not plan.store_kv and rows.span != (0, t):
        raise ValueError("a plan that does not store K/V must compute every row (the other rows' K/V come from the store)")
    h = state.input_rows(module, rows)
    if plan.full_rows is None:
        refreshing = torch.full((b,), rows.span == (0, t), dtype=torch.bool, device=h.device)
        share = float(rows.span == (0, t))  # fraction of sequences refreshing, kept on the host (no sync per layer)
    else:
        refreshing, share = plan.full_rows.clone(), float(plan.full_rows.float().mean())
    layer_rows, refreshed = [], []
    inputs = state.store.inputs
    cos, sin = rows.gather(state.cos).unsqueeze(1), rows.gather(state.sin).unsqueeze(1)

    def widen(i: int, switch: Tensor) -> None:
        nonlocal rows, h, cos, sin, share
        rows, h = _widen(state, rows, h, i, switch)
        refreshing.logical_or_(switch)
        share = float(refreshing.float().mean())
        cos, sin = rows.gather(state.cos).unsqueeze(1), rows.gather(state.sin).unsqueeze(1)

    pending = None  # sequences a hook switched at the previous layer (plan.refresh_next)
    last = len(module.layers) - 1
    for i, layer in enumerate(module.layers):
        if plan.refresh_from is not None and i == plan.refresh_from and not bool(refreshing.all()):
            widen(i, ~refreshing)
        if pending is not None:
            widen(i, pending)
            pending = None
        if inputs is not None:
            rows.scatter_(inputs[i], h)
        while True:
            prob_index = rows.locate(plan.prob_positions) if plan.prob_positions is not None else None
            keep = _logit_rows(module, rows, plan.logit_positions) if i == last and plan.layer_hook is None else None
            qkv = None
            if i == 0 and state.layer0 is not None and rows.span == (0, t):
                qkv = state.layer0.qkv(layer, h, state.canvas, cos, sin, state.scratch)
            out, probs = layer(
                h, cos, sin, kv=state.store.kv[i] if plan.store_kv else None, rows=rows, key_mask=state.key_mask,
                prob_index=prob_index, keep=keep, qkv=qkv, scratch=state.scratch,
            )
            switch = plan.layer_hook(i, probs, refreshing) if plan.layer_hook is not None else None
            if switch is None or not bool((switch & ~refreshing).any()):
                break
            if plan.refresh_next:
                # Drift detected: this layer keeps its result; every deeper layer recomputes all rows.
                pending = switch & ~refreshing
                break
            # Drift detected at this layer: recompute it, and every deeper layer, over all rows.
            widen(i, switch & ~refreshing)
        h = out
        layer_rows.append(rows.size)
        refreshed.append(share)
    if keep is None:  # a hooked last layer computed every row: pick the logit rows now
        h = _pick(h, _logit_rows(module, rows, plan.logit_positions))
    return StepOutput(module.head(h), layer_rows, refreshed)


def _logit_rows(module, rows: Rows, logit_positions: Rows) -> slice | Tensor:
    """Which of the computed rows predict `logit_positions`: a slice when both are spans, else [B, N] indices."""
    if rows.span is not None and logit_positions.span is not None:
        shift = 1 if module.cfg.shift_logits else 0
        start, end = logit_positions.span[0] - shift, logit_positions.span[1] - shift
        if start >= rows.span[0] and end <= rows.span[1]:
            return slice(start - rows.span[0], end - rows.span[0])
    return rows.locate(source_positions(module, logit_positions.index))


def _pick(h: Tensor, keep: slice | Tensor) -> Tensor:
    """Hidden states [B, N, d] of the kept rows."""
    if isinstance(keep, slice):
        return h[:, keep]
    return torch.gather(h, 1, keep.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
