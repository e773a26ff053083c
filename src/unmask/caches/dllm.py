"""dLLM-Cache: long-interval prompt refresh, short-interval response refresh, adaptive rows in between.

Step counter s starts at 0 for every generation. A prompt refresh (s % kp == 0) recomputes
every row: prompt rows attend to the response, so their K/V need the whole canvas. A response
refresh (s % kr == 0) recomputes response rows against the cached prompt K/V. Other steps
recompute only the `int(rou * R)` response rows whose value vectors drifted most (see
`engine/branch_forward.py`).
"""

from __future__ import annotations

from ..engine import StepPlan
from .base import CachePolicy


class DLLMCache(CachePolicy):
    name = "dllm"
    params = {"kp": 50, "kr": 2, "rou": 0.25}
    # The paper's per-task (kp, kr) (algorithms.md section 3); arith is GSM8K-shaped and takes GSM8K's.
    task_params = {
        "arith": {"kp": 50, "kr": 7},
        "gsm8k": {"kp": 50, "kr": 7},
        "math-500": {"kp": 50, "kr": 1},
        "mbpp": {"kp": 100, "kr": 5},
        "humaneval": {"kp": 25, "kr": 5},
        "humaneval_instruct": {"kp": 25, "kr": 5},
    }
    needs_branches = True

    @classmethod
    def validate(cls, settings, options, family: str) -> None:
        super().validate(settings, options, family)
        if settings["kp"] < 1 or settings["kr"] < 1:
            raise ValueError(f"cache.kp={settings['kp']} and cache.kr={settings['kr']} must be >= 1")
        if not 0 <= settings["rou"] <= 1:
            raise ValueError(f"cache.rou={settings['rou']} must be in [0, 1]")

    @classmethod
    def confidence_dtype(cls, options) -> str:
        return "float64" if options.parallel else "logits"  # dLLM-Cache's loop: the logits' dtype

    def selection_span(self, state, ctx):
        return ctx.gen_start, state.length  # dLLM-Cache ranks the generated region only

    def mode(self, step: int) -> str:
        if step % self.settings["kp"] == 0:
            return "full"
        if step % self.settings["kr"] == 0:
            return "response"
        return "adaptive"

    def plan(self, state, ctx):
        return StepPlan(
            rows=state.all_rows(),  # the branch forward picks its own rows per layer
            logit_positions=self.block_rows(state, ctx),
            branch_mode=self.mode(ctx.step),
            branch_start=ctx.gen_start - self.shift,
            adaptive_ratio=self.settings["rou"],
        )
