"""Fast-dLLM's block-wise caches: PrefixCache, and DualCache with `use_dual=true`.

At each block start every row is recomputed (the refresh step). Later steps of the block
recompute the block and the masked suffix (prefix) or only the block (dual); other rows keep
the K/V from the refresh.

Dream predicts the token at p from row p - 1, so the block's first token depends on the row
before the block. Two official readings (`dream_start`):
- `commit` (default, Fast-dLLM's Dream code): the refresh step commits only the block's first
  position, from its logits whatever the confidence; later steps feed rows [s, ...).
- `query` (the seed framework, d2Cache's repository): the refresh step decodes with the usual
  rule; later steps feed rows [s - 1, ...) and leave the last row of their span to the cache.
"""

from __future__ import annotations

from ..engine import Rows, StepPlan
from .base import CachePolicy, StepContext

DREAM_STARTS = ("commit", "query")


class PrefixCache(CachePolicy):
    name = "prefix"
    params = {"use_dual": False, "dream_start": "commit"}

    @classmethod
    def default_options(cls, settings, family: str) -> dict:
        # Both official Dream codes call the sampler with top_k=None (Fast-dLLM's eval and demo
        # pass it explicitly; the seed framework's config leaves it null), not the hub's 50.
        return {"top_k": 0} if family == "dream" else {}

    @classmethod
    def validate(cls, settings, options, family: str) -> None:
        super().validate(settings, options, family)
        if settings["dream_start"] not in DREAM_STARTS:
            raise ValueError(f"cache.dream_start={settings['dream_start']!r}; valid choices: {list(DREAM_STARTS)}")
        if settings["dream_start"] != "commit" and family != "dream":
            raise ValueError("cache.dream_start applies to Dream (shifted logits) only; leave it unset for this model")

    def commits_first_mask(self, ctx: StepContext) -> bool:
        return bool(self.shift) and self.settings["dream_start"] == "commit" and ctx.block_step == 0

    def selection_span(self, state, ctx):
        # Fast-dLLM ranks what it computed: the whole canvas at the block's refresh, then the block
        # and suffix (prefix) or the block alone (dual).
        if ctx.block_step == 0 or self.shift:
            return 0, state.length
        s, e = ctx.block
        return s, (e if self.settings["use_dual"] else state.length)

    def plan(self, state, ctx):
        if ctx.block_step == 0:
            return self.full_plan(state, ctx)
        s, e = ctx.block
        end = e if self.settings["use_dual"] else state.length
        device = state.canvas.device
        if not self.shift:
            return StepPlan(rows=Rows.range(s, end, state.batch, device), logit_positions=self.block_rows(state, ctx))
        if self.settings["dream_start"] == "commit":
            # Position s was committed at the refresh step; rows s.. predict positions s+1..
            rows = Rows.range(s, end, state.batch, device)
            return StepPlan(rows=rows, logit_positions=Rows.range(s + 1, e, state.batch, device))
        # The seed framework shifts its query rows left by one: rows s-1 .. end-2.
        rows = Rows.range(s - 1, end - 1, state.batch, device)
        return StepPlan(rows=rows, logit_positions=self.block_rows(state, ctx))
