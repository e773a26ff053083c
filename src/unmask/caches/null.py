"""cache=null: the baseline. Every step recomputes every row; logits only for the current block."""

from __future__ import annotations

from .base import CachePolicy


class NullCache(CachePolicy):
    name = "null"

    @classmethod
    def confidence_dtype(cls, options) -> str:
        # LLaDA's generate.py takes the softmax in the logits' dtype; Fast-dLLM's parallel loop in float64.
        return "float64" if options.parallel else "logits"

    @classmethod
    def validate(cls, settings, options, family: str) -> None:
        pass  # the baseline supports every decoding option, classifier-free guidance included

    def plan(self, state, ctx):
        plan = self.full_plan(state, ctx)
        plan.store_kv = False  # every step recomputes every row: nothing reads the stored K/V
        return plan
