"""d2Cache (Dual aDaptive Cache): each step recomputes a chosen set of rows at every layer.

Stage 1 picks masked rows by cached confidence times certainty density; stage 2 adds the
rows with the most attention-rollout importance until `rollout_p` of the mass is covered;
short gaps between chosen rows are filled (`inflate_w`). Cached confidences are refreshed
with every step's fresh ones (the official code freezes them after step 0; not here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..decoding.prior import certainty_density
from ..engine import Rows, StepPlan
from .base import CachePolicy


def rollout_importance(layer_probs: list[Tensor], rows: Tensor, length: int) -> Tensor:
    """imp = 1^T W_L ... W_1 with W = rownorm(E + I), E = identity with the computed rows' attention.

    Only the computed rows differ from the identity, so each layer costs R x T, not T x T.
    `layer_probs[l]` is head-averaged attention [B, R, T] of `rows` [B, R] (sorted, may repeat).
    """
    b = rows.shape[0]
    first = torch.ones_like(rows, dtype=torch.bool)
    first[:, 1:] = rows[:, 1:] != rows[:, :-1]  # count repeated (padding) rows once
    selected = torch.zeros(b, length, dtype=torch.float32, device=rows.device).scatter_(1, rows, 1.0)
    v = torch.ones(b, length, dtype=torch.float32, device=rows.device)
    for probs in reversed(layer_probs):
        weights = torch.gather(v, 1, rows) * first / 2  # [B, R]
        v = v * (1 - selected / 2) + torch.bmm(weights.unsqueeze(1), probs.float()).squeeze(1)
    return v


def top_mass(importance: Tensor, eligible: Tensor, p: float) -> Tensor:
    """Smallest set of eligible rows whose share of the total importance reaches p (at least one)."""
    total = (importance * eligible).sum(-1, keepdim=True).clamp_min(1e-12)
    share = torch.where(eligible, importance / total, torch.full_like(importance, -1.0))
    values, order = share.sort(dim=-1, descending=True)
    before = values.clamp_min(0).cumsum(-1) - values.clamp_min(0)
    keep = (before < p) & (values >= 0)
    keep[:, 0] &= eligible.any(-1)
    return torch.zeros_like(eligible).scatter_(1, order, keep)


def inflate(chosen: Tensor, width: int, valid: Tensor) -> Tensor:
    """Fill gaps of at most `width` unchosen rows between two chosen rows."""
    t = chosen.shape[-1]
    pos = torch.arange(t, device=chosen.device).expand_as(chosen)
    prev = torch.where(chosen, pos, torch.full_like(pos, -1)).cummax(-1).values
    nxt = torch.where(chosen, pos, torch.full_like(pos, t)).flip(-1).cummin(-1).values.flip(-1)
    gap = nxt - prev - 1
    fill = (prev >= 0) & (nxt < t) & (gap <= width)
    return (chosen | fill) & valid


class D2Cache(CachePolicy):
    name = "d2cache"
    params = {"rollout_p": 0.1, "current_k": 32, "sigma": 10.0, "inflate_w": 4}

    @classmethod
    def default_options(cls, settings, family: str) -> dict:
        # d2Cache decodes without fixed blocks, guided by the certainty prior.
        return {"block_length": None, "sigma": 10.0}

    @classmethod
    def validate(cls, settings, options, family: str) -> None:
        super().validate(settings, options, family)
        if not 0 < settings["rollout_p"] <= 1:
            raise ValueError(f"cache.rollout_p={settings['rollout_p']} must be in (0, 1]")
        if settings["current_k"] < 1:
            raise ValueError(f"cache.current_k={settings['current_k']} must be >= 1")
        if settings["sigma"] <= 0:
            raise ValueError(f"cache.sigma={settings['sigma']} must be > 0")
        if settings["inflate_w"] < 0:
            raise ValueError(f"cache.inflate_w={settings['inflate_w']} must be >= 0 (0 disables)")

    def __init__(self, settings, module, options, special):
        super().__init__(settings, module, options, special)
        self.conf: Tensor | None = None  # [B, T] cached confidence of every mask
        self.importance: Tensor | None = None  # [B, T] rollout importance from the last step
        self.decoded: Tensor | None = None  # [B, T] positions committed by the last step
        self._probs: list[Tensor] = []

    def _collect(self, layer: int, probs: Tensor | None, refreshing: Tensor) -> None:
        self._probs.append(probs.mean(dim=1))

    def plan(self, state, ctx):
        self._probs = []
        if self.conf is None:  # step 0: everything, and the confidence of every mask
            t = state.length
            rows = state.all_rows()
            return StepPlan(
                rows=rows,
                logit_positions=Rows.range(ctx.gen_start, t, state.batch, state.canvas.device),
                prob_positions=rows.index,
                layer_hook=self._collect,
            )
        masks = self._stage_one(state, ctx)
        chosen = masks | self.decoded | self._stage_two(state, masks)
        if self.shift:
            chosen[:, :-1] |= masks[:, 1:]
        if self.settings["inflate_w"]:
            chosen = inflate(chosen, self.settings["inflate_w"], state.valid)
        chosen[:, -1] |= ~chosen.any(-1)  # finished sequences still need one row
        masks[:, -1] |= ~masks.any(-1)
        rows = Rows.from_mask(chosen)
        return StepPlan(rows=rows, logit_positions=Rows.from_mask(masks), prob_positions=rows.index, layer_hook=self._collect)

    def _stage_one(self, state, ctx) -> Tensor:
        """Top `current_k` masks by confidence x certainty density in the window from the current block."""
        s, _ = ctx.block
        k, bl = self.settings["current_k"], self.options.block_length
        masked = ctx.masked
        t = state.length
        # Window end: the first block boundary at which at least current_k masks remain in [s, end).
        counts = masked[:, s:].long().cumsum(-1)
        ends = torch.arange(s + bl, t + bl, bl, device=masked.device).clamp(max=t)
        per_end = counts[:, ends - s - 1]  # masks in [s, end) for each candidate end
        enough = per_end >= k
        first_end = torch.where(enough.any(-1), enough.float().argmax(-1), torch.full_like(enough[:, 0], len(ends) - 1, dtype=torch.long))
        window_end = ends[first_end]
        pos = torch.arange(t, device=masked.device)
        in_window = masked & (pos >= s) & (pos < window_end.unsqueeze(1))
        decoded = ~((state.canvas == self.special.mask) & state.valid)[:, ctx.gen_start :]
        score = self.conf.clone()
        score[:, ctx.gen_start :] *= certainty_density(decoded, self.settings["sigma"])
        score = score.masked_fill(~in_window, float("-inf"))
        block_end = s + bl
        in_block = in_window & (pos < block_end)
        best = score.max(-1, keepdim=True).values.clamp_min(0)
        score = torch.where(in_block, score + best, score)
        n = min(k, t)
        top = torch.topk(score, n, dim=-1)
        pick = torch.isfinite(top.values)
        return torch.zeros_like(masked).scatter_(1, top.indices, pick)

    def _stage_two(self, state, masks: Tensor) -> Tensor:
        eligible = state.valid & ~masks & ~self.decoded & ~self._masked_positions(state)
        return top_mass(self.importance, eligible, self.settings["rollout_p"])

    def _masked_positions(self, state) -> Tensor:
        return state.canvas == self.special.mask

    def after_forward(self, state, ctx, plan, out):
        self.importance = rollout_importance(self._probs, plan.rows.index, state.length)
        self._probs = []

    def on_step_end(self, state, ctx, committed, conf):
        fresh = torch.isfinite(conf)
        self.conf = torch.where(fresh, conf, self.conf) if self.conf is not None else torch.where(fresh, conf, torch.zeros_like(conf))
        self.decoded = committed.clone()
