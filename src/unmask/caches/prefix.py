"""Fast-dLLM's block-wise caches: PrefixCache, and DualCache with `use_dual=true`.

At each block start every row is recomputed (the refresh step, which also decodes).
Later steps of the block recompute the block and the masked suffix (prefix) or only
the block (dual); other rows keep the K/V from the refresh. Dream predicts the block's
first token from the row before it, so that row is recomputed too.
"""

from __future__ import annotations

from ..engine import Rows, StepPlan
from .base import CachePolicy


class PrefixCache(CachePolicy):
    name = "prefix"
    params = {"use_dual": False}

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
        rows = Rows.range(s - self.shift, end, state.batch, state.canvas.device)
        return StepPlan(rows=rows, logit_positions=self.block_rows(state, ctx))
