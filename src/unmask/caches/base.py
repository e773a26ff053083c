"""The cache-policy interface: what a method decides each step, and the checks it makes up front."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ..engine import CanvasState, Rows, StepContext, StepOutput, StepPlan, run_plan


class CachePolicy:
    """Decides, each step, which rows to recompute; never touches weights.

    Subclasses declare `name`, `params` (defaults, whose types `unmask.parsing` reads values as)
    and the extra stores they need, and override `plan` and the lifecycle hooks. Their checks
    live in `validate`, a class method of (settings, options, family), so a config, a server
    request or a `generate` call is validated without a model.
    """

    name: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    # Parameters the method's paper sets per evaluation task; they replace `params` defaults, but
    # never a value the user set (the config layer applies them, knowing which keys were given).
    task_params: ClassVar[dict[str, dict[str, Any]]] = {}
    needs_layer_inputs: ClassVar[bool] = False
    needs_queries: ClassVar[bool] = False  # keep every row's post-RoPE queries per layer
    # The loop sets the [MASK] logit to -inf before confidences (committing [MASK] would leave a mask in
    # the answer); a method whose official code does not may turn this off.
    suppress_mask_logit: bool = True

    def __init__(self, settings: dict[str, Any], module, options, special) -> None:
        self.settings = settings
        self.module = module
        self.options = options
        self.special = special  # SpecialTokens: mask, eos, eot, ...
        self.shift = 1 if module.cfg.shift_logits else 0

    @classmethod
    def default_options(cls, settings: dict[str, Any], family: str) -> dict[str, Any]:
        """Decoding defaults this method is published with; options the user sets win."""
        return {}

    @classmethod
    def confidence_dtype(cls, options) -> str:
        """Softmax dtype of low_confidence in this method's official loop (Fast-dLLM's loops: float64)."""
        return "float64"

    def selection_span(self, state: CanvasState, ctx: StepContext) -> tuple[int, int]:
        """Canvas slice [lo, hi) the official loop ranks confidences over.

        Only the order of exact ties depends on it (top-k breaks them by position within the
        ranked vector), but in a low-precision softmax near-certain tokens do tie.
        """
        return 0, state.length

    @classmethod
    def validate(cls, settings: dict[str, Any], options, family: str) -> None:
        """Raise (naming the key) for settings or decoding options this method cannot honour.

        Pure: needs no model, so the config layer, the server and `generate` all call it.
        Subclasses call `super().validate(...)` first, then check their own settings.
        """
        if options.cfg_scale > 0:
            raise ValueError(f"cache={cls.name} does not support generation.cfg_scale > 0 (only cache=null does)")

    def on_block_start(self, state: CanvasState, ctx: StepContext) -> None:
        pass

    def commits_first_mask(self, ctx: StepContext) -> bool:
        """True where this step must commit only the first mask (Fast-dLLM's Dream block start)."""
        return False

    def plan(self, state: CanvasState, ctx: StepContext) -> StepPlan:
        """What this step computes. The loop reads only `logit_positions`; the rest is for `forward`."""
        raise NotImplementedError

    def forward(self, state: CanvasState, plan: StepPlan) -> StepOutput:
        """Execute this policy's plan: the engine's partial forward, unless a method brings its own."""
        return run_plan(self.module, state, plan)

    def after_forward(self, state: CanvasState, ctx: StepContext, plan: StepPlan, out: StepOutput) -> None:
        pass

    def on_step_end(self, state: CanvasState, ctx: StepContext, committed: Tensor, conf: Tensor) -> None:
        """`committed` [B,T] bool positions decoded this step; `conf` [B,T] this step's confidences (-inf if unknown)."""

    # helpers shared by policies
    def block_rows(self, state: CanvasState, ctx: StepContext) -> Rows:
        s, e = ctx.block
        return Rows.range(s, e, state.batch, state.canvas.device)

    def full_plan(self, state: CanvasState, ctx: StepContext) -> StepPlan:
        return StepPlan(rows=state.all_rows(), logit_positions=self.block_rows(state, ctx))
