"""dLLM-Cache: long-interval prompt refresh, short-interval response refresh, adaptive rows in between.

Step counter s starts at 0 for every generation. A prompt refresh (s % kp == 0) recomputes
every row: prompt rows attend to the response, so their K/V need the whole canvas. A response
refresh (s % kr == 0) recomputes response rows against the cached prompt K/V. Other steps
recompute only the `int(rou * R)` response rows whose value vectors drifted most (see
`dllm_forward.py`: the method owns its forward, its plan type and its branch-output store).
"""

from __future__ import annotations

from ..engine import CanvasState, StepOutput
from .base import CachePolicy
from .dllm_forward import BranchPlan, BranchStore, run_branch_plan


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

    def __init__(self, settings, module, options, special):
        super().__init__(settings, module, options, special)
        self.branches: BranchStore | None = None  # allocated at the first step, for the request's canvas

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
        return BranchPlan(
            logit_positions=self.block_rows(state, ctx),
            mode=self.mode(ctx.step),
            start=ctx.gen_start - self.shift,
            ratio=self.settings["rou"],
        )

    def forward(self, state: CanvasState, plan: BranchPlan) -> StepOutput:
        if self.branches is None:
            shape = (state.batch, state.length, self.module.cfg.hidden_size)
            self.branches = BranchStore(self.module.cfg.num_layers, shape, self.module.embed.weight.dtype, state.canvas.device)
        return run_branch_plan(self.module, state, plan, self.branches)
