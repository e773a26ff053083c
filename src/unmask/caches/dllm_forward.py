"""dLLM-Cache's forward: reuse cached attention/FFN branch outputs for rows that barely changed.

Modes (chosen by the policy from its kp/kr schedule):
- "full": every row recomputed; K/V and both branch outputs stored for all rows.
- "response": response rows recomputed against cached prompt K/V; prompt rows untouched
  (their hidden states only matter through their K/V, which stay cached).
- "adaptive": layer 0 recomputes all response rows; deeper layers compute fresh V for all
  response rows, pick the `int(rou * R)` rows whose V is least cosine-similar to the cache,
  and recompute Q/K, attention and FFN for those only. Other rows add their cached branch
  outputs to their current residual stream.

This is not a row selection the engine's `run_plan` could execute, so the policy owns it,
with its own plan type and its own stores (the branch outputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine import CanvasState, Rows, StepOutput, source_positions


@dataclass
class BranchPlan:
    """One dLLM-Cache step: which rows feed layer 0 and how deeper layers reuse cached branches."""

    logit_positions: Rows  # canvas positions whose token predictions are needed
    mode: str  # "full" | "response" | "adaptive"
    start: int  # first response row (the rows a non-full step computes begin here)
    ratio: float  # rou: share of response rows an adaptive layer recomputes


class BranchStore:
    """Attention-branch and FFN-branch outputs [B, T, d] per layer, reused for rows not recomputed."""

    def __init__(self, num_layers: int, shape: tuple[int, int, int], dtype, device):
        self.attn_out = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.ffn_out = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]


def _layer_with_branches(layer, x, cos, sin, kv, rows, key_mask):
    normed = layer.attn_norm(x)
    q, k, v = layer.qkv(normed, cos, sin)
    k, v = kv.write(rows, k, v)
    attn = layer.attend(q, k, v, key_mask)
    h = x + attn
    ffn = layer.ffn(h)
    return h + ffn, attn, ffn


def _adaptive_layer(layer, x, state: CanvasState, branches: BranchStore, i: int, start: int, ratio: float):
    """Recompute only the response rows whose fresh V drifted most from the cached V."""
    kv = state.store.kv[i]
    b, r, _ = x.shape
    normed = layer.attn_norm(x)
    v_new = layer.value(normed)  # [B, Hkv, R, D]
    v_old = kv.v[:, :, start:]
    sim = F.cosine_similarity(v_new.transpose(1, 2).reshape(b, r, -1), v_old.transpose(1, 2).reshape(b, r, -1), dim=-1)
    kv.v[:, :, start:] = v_new
    n = int(ratio * r)
    attn_cache, ffn_cache = branches.attn_out[i], branches.ffn_out[i]
    if n > 0:
        rel = torch.topk(sim, n, dim=-1, largest=False).indices.sort(dim=-1).values
        picked = Rows(rel + start)
        local = Rows(rel)
        pn = local.gather(normed)
        cos, sin = picked.gather(state.cos).unsqueeze(1), picked.gather(state.sin).unsqueeze(1)
        picked.scatter_(kv.k, layer.key(pn, cos, sin), dim=2)
        attn = layer.attend(layer.query(pn, cos, sin), kv.k, kv.v, state.key_mask)
        picked.scatter_(attn_cache, attn)
        h = x + attn_cache[:, start:]
        picked.scatter_(ffn_cache, layer.ffn(local.gather(h)))
    else:
        h = x + attn_cache[:, start:]
    return h + ffn_cache[:, start:], n


def run_branch_plan(module, state: CanvasState, plan: BranchPlan, branches: BranchStore) -> StepOutput:
    t, b = state.length, state.batch
    start = 0 if plan.mode == "full" else plan.start
    rows = Rows.range(start, t, b, state.canvas.device)
    h = state.input_rows(module, rows)
    cos, sin = rows.gather(state.cos).unsqueeze(1), rows.gather(state.sin).unsqueeze(1)
    layer_rows, refreshed = [], []
    for i, layer in enumerate(module.layers):
        if plan.mode == "adaptive" and i > 0:
            h, n = _adaptive_layer(layer, h, state, branches, i, start, plan.ratio)
            layer_rows.append(n)
            refreshed.append(0.0)
            continue
        h, attn, ffn = _layer_with_branches(layer, h, cos, sin, state.store.kv[i], rows, state.key_mask)
        rows.scatter_(branches.attn_out[i], attn)
        rows.scatter_(branches.ffn_out[i], ffn)
        layer_rows.append(rows.size)
        refreshed.append(float(start == 0))
    source = source_positions(module, plan.logit_positions.index) - start
    picked = torch.gather(h, 1, source.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
    return StepOutput(module.head(picked), layer_rows, refreshed)
