"""Elastic-Cache: attention-aware drift test decides *when* to refresh, depth decides *where*.

Each step queries only the sliding window (the first `window` masks), the rows decoded last
step and the tracked (most-attended) tokens; masks past the window keep their cached K/V
as a length bias. Going up the layers, when the tracked token's attention row has drifted
(cosine to the previous step below `gamma`), every deeper layer recomputes all rows of that
sequence from its cached layer inputs. Layer 0 never triggers (its K/V depend only on
embeddings). A committed EOS/EOT drops the masks after it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..decoding.stops import stop_mask
from ..engine import Rows, StepPlan
from .base import CachePolicy


def attention_drift(now: Tensor, before: Tensor, valid: Tensor, axis: str) -> Tensor:
    """Similarity [B, k] of attention rows [B, k, H, T] now vs the previous step.

    rows: cosine between head-averaged attention rows (the paper's reading);
    heads: cosine across heads per key, averaged over valid keys (the official code's).
    """
    if axis == "rows":
        return F.cosine_similarity(now.mean(2), before.mean(2), dim=-1)
    per_key = F.cosine_similarity(now, before, dim=2)  # [B, k, T]
    weight = valid.unsqueeze(1).float()
    return (per_key * weight).sum(-1) / weight.sum(-1).clamp_min(1)


class ElasticCache(CachePolicy):
    name = "elastic"
    params = {"gamma": 0.9, "window": 0, "tau": 0.9, "track_num": 1, "drift_axis": "rows"}
    needs_layer_inputs = True

    @classmethod
    def default_options(cls, settings, family: str) -> dict:
        # Elastic-Cache decodes a sliding window with the threshold rule, without fixed blocks.
        return {"threshold": settings["tau"], "block_length": None}

    def __init__(self, settings, module, options, special):
        super().__init__(settings, module, options, special)
        if not 0 <= settings["gamma"] <= 1:
            raise ValueError(f"cache.gamma={settings['gamma']} must be in [0, 1]")
        if settings["window"] < 0 or settings["track_num"] < 1:
            raise ValueError("cache.window must be >= 0 (0 = 16 for LLaDA, 32 for Dream) and cache.track_num >= 1")
        if settings["drift_axis"] not in ("rows", "heads"):
            raise ValueError(f"cache.drift_axis={settings['drift_axis']!r}; valid choices: ['rows', 'heads']")
        if options.factor is not None:
            raise ValueError("cache=elastic decodes with the threshold rule (cache.tau); generation.factor is not supported")
        if options.threshold != settings["tau"]:
            raise ValueError(
                f"generation.threshold={options.threshold} conflicts with cache.tau={settings['tau']}: "
                "Elastic-Cache's tau is the decoding threshold; set only cache.tau"
            )
        self.window = settings["window"] or (32 if module.cfg.shift_logits else 16)
        n = module.cfg.num_layers
        self.tracked: list[Tensor | None] = [None] * n  # [B, k] most-attended keys per layer
        self.before: list[Tensor | None] = [None] * n  # [B, k, H, T] their attention rows last time
        self.known: list[Tensor | None] = [None] * n  # [B, k] whether `before` holds a real row
        self.last_decoded: Tensor | None = None
        self._probe: Tensor | None = None  # prob positions of the current step
        self._window_at: Tensor | None = None  # index of window rows within the probe
        self._state = None
        self._next: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def _window(self, ctx) -> Tensor:
        """The first `window` masks at or after the block start, [B, T] bool."""
        s, e = ctx.block
        masked = ctx.masked.clone()
        masked[:, :s] = False
        masked[:, e:] = False
        return masked & (masked.long().cumsum(-1) <= self.window)

    def plan(self, state, ctx):
        self._state = state
        window = self._window(ctx)
        window[:, -1] |= ~window.any(-1)  # finished sequences still need a row
        logit_rows = Rows.from_mask(window)
        # Step 0 fills the caches. gamma >= 1 trusts no cached state (cosine never exceeds 1),
        # so every step recomputes every row from layer 0: the exact baseline.
        if self.last_decoded is None or self.settings["gamma"] >= 1.0:
            rows = state.all_rows()
            probe = rows.index
        else:
            query = window | self.last_decoded
            for tracked in self.tracked:
                query.scatter_(1, tracked, True)
            if self.shift:
                query[:, :-1] |= window[:, 1:]
            rows = Rows.from_mask(query)
            probe = rows.index
        self._probe = probe
        self._window_at = torch.searchsorted(probe.contiguous(), logit_rows.index)
        return StepPlan(rows=rows, logit_positions=logit_rows, prob_positions=probe, layer_hook=self._on_layer)

    def _on_layer(self, layer: int, probs: Tensor, refreshing: Tensor) -> Tensor | None:
        state = self._state
        switch = None
        tracked, before, known = self.tracked[layer], self.before[layer], self.known[layer]
        if layer > 0 and tracked is not None:
            at = torch.searchsorted(self._probe.contiguous(), tracked)  # tracked tokens are always queried
            now = self._rows(probs, at)
            sim = attention_drift(now, before, state.valid, self.settings["drift_axis"])
            # A newly tracked token has no previous row yet: it is tested from the next step on.
            drifted = (sim < self.settings["gamma"]) & known
            switch = drifted.any(-1)
        # Choose the next tracked tokens: most attention mass from the window, over heads.
        idx = self._window_at.unsqueeze(1).unsqueeze(-1).expand(-1, probs.shape[1], -1, probs.shape[-1])
        mass = torch.gather(probs, 2, idx).sum(dim=(1, 2))  # [B, T]
        eligible = state.valid & (state.canvas != self.special.mask)
        mass = mass.masked_fill(~eligible, float("-inf"))
        new = torch.topk(mass, self.settings["track_num"], dim=-1).indices.sort(-1).values
        at = torch.searchsorted(self._probe.contiguous(), new).clamp(max=self._probe.shape[1] - 1)
        # Kept aside until the step ends: a refreshed layer calls this hook again.
        self._next[layer] = (new, torch.gather(self._probe, 1, at) == new, self._rows(probs, at))
        return switch

    @staticmethod
    def _rows(probs: Tensor, at: Tensor) -> Tensor:
        """Attention rows [B, k, H, T] of probe entries `at` [B, k]."""
        idx = at.unsqueeze(1).unsqueeze(-1).expand(-1, probs.shape[1], -1, probs.shape[-1])
        return torch.gather(probs, 2, idx).transpose(1, 2)

    def after_forward(self, state, ctx, plan, out):
        for layer, (tracked, known, before) in self._next.items():
            self.tracked[layer], self.known[layer], self.before[layer] = tracked, known, before
        self._next = {}

    def on_step_end(self, state, ctx, committed, conf):
        self.last_decoded = committed.clone()
        # EOS truncation: masks after the first decoded EOS/EOT are dropped from the canvas.
        gen = state.canvas[:, ctx.gen_start :]
        is_stop = stop_mask(gen, self.special.stop_ids)
        if not bool(is_stop.any()):
            return
        drop = (is_stop.long().cumsum(-1) > 0) & (gen == self.special.mask)
        if bool(drop.any()):
            state.valid[:, ctx.gen_start :] &= ~drop
            state.refresh_key_mask()
