"""Elastic-Cache: an attention-drift test decides *when* to refresh, depth decides *where*.

Each step queries only the sliding window (the first `window` masks), the rows decoded last step and
the tracked (most-attended) tokens; masks past the window keep their cached K/V as a length bias.
Going up the layers, every layer (layer 0 included) compares the tracked tokens' attention now with
the attention their cached queries give against the keys as they stood before this step; when the
mean similarity falls below `gamma`, every deeper layer recomputes all rows from its cached inputs.
The first decoded EOS cuts the positions still to decode, once; the masks after it are never decoded
but stay attention keys (and may be tracked). The defaults reproduce the official code
(yxu-dev/Elastic-Cache, a copy of VILA-Lab's); unmask's own readings are named options.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine import Rows, StepPlan
from .base import CachePolicy

CHOICES = {"drift_axis": ("heads", "rows"), "refresh_from": ("next", "trigger"), "new_token_test": ("now", "next_step")}


def attention_drift(now: Tensor, before: Tensor, tokens: Tensor, keys: Tensor, axis: str) -> Tensor:
    """Mean similarity [B] of tracked tokens' attention [B, H, U, T] now vs before.

    `tokens` [B, U] and `keys` [B, T] weight which tracked tokens and keys count.
    heads (the official code): cosine across heads for each (token, key), averaged over tokens and keys;
    rows (the paper's wording): cosine between head-averaged attention rows, averaged over tokens.
    """
    tokens = tokens.float()
    if axis == "rows":
        sim = F.cosine_similarity(now.mean(1), before.mean(1), dim=-1)  # [B, U]
        return (sim * tokens).sum(-1) / tokens.sum(-1).clamp_min(1)
    per_key = F.cosine_similarity(now, before, dim=1)  # [B, U, T]
    keys = keys.float()
    total = (per_key * tokens.unsqueeze(-1) * keys.unsqueeze(1)).sum(dim=(1, 2))
    return total / (tokens.sum(-1) * keys.sum(-1)).clamp_min(1)


def _padded(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Positions [B, N] where a [B, T] mask is true (padded by repetition) and which slots are real."""
    index = Rows.from_mask(mask).index
    real = torch.arange(index.shape[1], device=mask.device) < mask.sum(-1, keepdim=True)
    return index, real


class ElasticCache(CachePolicy):
    name = "elastic"
    params = {
        "gamma": 0.9,
        "window": 0,
        "tau": 0.9,
        "track_num": 1,
        "drift_axis": "heads",
        "refresh_from": "next",  # next: the triggering layer keeps its result; trigger: it is recomputed too
        "new_token_test": "now",  # now: against its stale cached query; next_step: once it has a fresh one
        "exact_gamma1": False,  # gamma >= 1 recomputes every row from layer 0 (the exact baseline)
        "suppress_mask": False,  # set the [MASK] logit to -inf before confidences (the official code does not)
    }
    needs_layer_inputs = True
    needs_queries = True

    @classmethod
    def default_options(cls, settings, family: str) -> dict:
        # Elastic-Cache decodes a sliding window with the threshold rule, without fixed blocks.
        return {"threshold": settings["tau"], "block_length": None}

    @classmethod
    def validate(cls, settings, options, family: str) -> None:
        super().validate(settings, options, family)
        if not 0 <= settings["gamma"] <= 1:
            raise ValueError(f"cache.gamma={settings['gamma']} must be in [0, 1]")
        if settings["window"] < 0 or settings["track_num"] < 1:
            raise ValueError("cache.window must be >= 0 (0 = 16 for LLaDA, 32 for Dream) and cache.track_num >= 1")
        for key, choices in CHOICES.items():
            if settings[key] not in choices:
                raise ValueError(f"cache.{key}={settings[key]!r}; valid choices: {list(choices)}")
        if options.factor is not None:
            raise ValueError("cache=elastic decodes with the threshold rule (cache.tau); generation.factor is not supported")
        if options.threshold != settings["tau"]:
            raise ValueError(
                f"generation.threshold={options.threshold} conflicts with cache.tau={settings['tau']}: "
                "Elastic-Cache's tau is the decoding threshold; set only cache.tau"
            )

    def __init__(self, settings, module, options, special):
        super().__init__(settings, module, options, special)
        self.suppress_mask_logit = settings["suppress_mask"]
        self.window = settings["window"] or (32 if module.cfg.shift_logits else 16)
        self.picks: list[Tensor | None] = [None] * module.cfg.num_layers  # [B, k] tracked keys per layer
        self._next_picks: dict[int, Tensor] = {}
        self.last_decoded: Tensor | None = None  # [B, T] positions committed last step
        self.last_query: Tensor | None = None  # [B, T] rows queried last step
        self.cut: Tensor | None = None  # [B] whether the sequence's EOS cut happened
        self._state = None
        self._masks_now: Tensor | None = None  # [B, T] masks still to decode: never tracked
        self._probe: Tensor | None = None  # [B, P] prob positions of the current step
        self._window_at: Tensor | None = None  # [B, W] index of the window rows within the probe
        self._window_real: Tensor | None = None  # [B, W] which window slots are real (not padding)
        self._union: Tensor | None = None  # [B, U] tracked tokens tested this step
        self._union_weight: Tensor | None = None  # [B, U] which of them count
        self._union_at: Tensor | None = None  # [B, U] their index within the probe
        self._before: list[Tensor] = []  # per layer [B, H, U, T]: their attention before this step

    def _window(self, ctx) -> Tensor:
        """The first `window` masks still to decode at or after the block start, [B, T] bool."""
        s, e = ctx.block
        masked = ctx.masked.clone()
        masked[:, :s] = False
        masked[:, e:] = False
        return masked & (masked.long().cumsum(-1) <= self.window)

    def plan(self, state, ctx):
        self._state = state
        if self.cut is None:
            self.cut = torch.zeros(state.batch, dtype=torch.bool, device=state.canvas.device)
        window = self._window(ctx)
        window[:, -1] |= ~window.any(-1)  # finished sequences still need a row
        logit_rows = Rows.from_mask(window)
        self._masks_now = ctx.masked
        self._union = None
        exact = self.settings["exact_gamma1"] and self.settings["gamma"] >= 1.0
        if self.last_decoded is None or exact:
            # Step 0 fills the caches; with exact_gamma1, gamma >= 1 trusts no cached state (the baseline).
            rows = state.all_rows()
            tracked = None
            probe_mask = window
        else:
            tracked = torch.zeros_like(window)
            for picks in self.picks:
                tracked.scatter_(1, picks, True)
            query = window | self.last_decoded | tracked
            if self.shift:
                query[:, :-1] |= window[:, 1:]
            rows = Rows.from_mask(query)
            probe_mask = window | tracked
        self._probe, _ = _padded(probe_mask)
        if tracked is not None:
            self._prepare_drift(state, tracked)
        self._window_at = torch.searchsorted(self._probe.contiguous(), logit_rows.index)
        self._window_real = torch.arange(logit_rows.size, device=window.device) < window.sum(-1, keepdim=True)
        return StepPlan(
            rows=rows, logit_positions=logit_rows, prob_positions=self._probe, layer_hook=self._on_layer,
            refresh_next=self.settings["refresh_from"] == "next",
        )

    def _prepare_drift(self, state, tracked: Tensor) -> None:
        """The tracked tokens' attention before this step, from their cached queries and the cached keys."""
        union, real = _padded(tracked)
        if self.settings["new_token_test"] == "next_step":
            real &= torch.gather(self.last_query, 1, union)  # only tokens whose cached query is from last step
        self._union, self._union_weight = union, real
        self._union_at = torch.searchsorted(self._probe.contiguous(), union)  # their rows in every layer's probs
        idx = union[:, None, :, None]
        self._before = []
        for layer, kv in zip(self.module.layers, state.store.kv):
            q = torch.gather(kv.q, 2, idx.expand(-1, kv.q.shape[1], -1, kv.q.shape[-1]))
            self._before.append(layer.attention_probs(q, kv.k, state.key_mask))

    def _on_layer(self, layer: int, probs: Tensor, refreshing: Tensor) -> Tensor | None:
        state = self._state
        switch = None
        if self._union is not None:
            now = self._gather_rows(probs, self._union_at)
            sim = attention_drift(now, self._before[layer], self._union_weight, state.valid, self.settings["drift_axis"])
            switch = (sim < self.settings["gamma"]) & self._union_weight.any(-1)
        # The next tracked tokens: most attention mass from the window rows, summed over heads. Only the masks
        # still to decode are excluded (mass 0): decoded tokens and the masks past the EOS cut can be tracked.
        window = self._gather_rows(probs, self._window_at) * self._window_real[:, None, :, None]
        mass = window.sum(dim=(1, 2))  # [B, T]
        mass = mass.masked_fill(self._masks_now, 0.0).masked_fill(~state.valid, float("-inf"))
        # Kept aside until the step ends: with refresh_from=trigger a refreshed layer calls this hook again.
        self._next_picks[layer] = torch.topk(mass, self.settings["track_num"], dim=-1).indices
        return switch

    @staticmethod
    def _gather_rows(probs: Tensor, at: Tensor) -> Tensor:
        """Attention rows [B, H, k, T] of probe entries `at` [B, k]."""
        idx = at[:, None, :, None].expand(-1, probs.shape[1], -1, probs.shape[-1])
        return torch.gather(probs, 2, idx)

    def after_forward(self, state, ctx, plan, out):
        for layer, picks in self._next_picks.items():
            self.picks[layer] = picks
        self._next_picks = {}
        self.last_query = plan.rows.mask(state.length)

    def on_step_end(self, state, ctx, committed, conf):
        self.last_decoded = committed.clone()
        # The EOS cut, once per sequence: masks after the first EOS decoded are no longer decoded (they stay keys).
        eos = committed & (state.canvas == self.special.eos)
        new_cut = eos.any(-1) & ~self.cut
        if not bool(new_cut.any()):
            return
        positions = torch.arange(state.length, device=eos.device)
        first = torch.where(eos, positions, state.length).min(-1).values
        state.pending &= ~(new_cut.unsqueeze(1) & (positions > first.unsqueeze(1)))
        self.cut |= new_cut
