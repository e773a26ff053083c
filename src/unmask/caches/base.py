"""The cache-policy interface and the registry behind `cache=<name>`."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ..engine import CanvasState, Rows, StepContext, StepOutput, StepPlan


class CachePolicy:
    """Decides, each step, which rows to recompute; never touches weights.

    Subclasses declare `name`, `params` (defaults, whose types coerce command-line strings)
    and the extra stores they need, and override `plan` and the lifecycle hooks.
    """

    name: ClassVar[str]
    params: ClassVar[dict[str, Any]] = {}
    # Parameters the method's paper sets per evaluation task; they replace `params` defaults, but
    # never a value the user set (the config layer applies them, knowing which keys were given).
    task_params: ClassVar[dict[str, dict[str, Any]]] = {}
    needs_layer_inputs: ClassVar[bool] = False
    needs_branches: ClassVar[bool] = False
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
        self.check_options(options)

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

    def check_options(self, options) -> None:
        """Raise for decoding options this method cannot honour."""
        if options.cfg_scale > 0:
            raise ValueError(f"cache={self.name} does not support generation.cfg_scale > 0 (only cache=null does)")

    def on_block_start(self, state: CanvasState, ctx: StepContext) -> None:
        pass

    def commits_first_mask(self, ctx: StepContext) -> bool:
        """True where this step must commit only the first mask (Fast-dLLM's Dream block start)."""
        return False

    def plan(self, state: CanvasState, ctx: StepContext) -> StepPlan:
        raise NotImplementedError

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


def coerce(name: str, key: str, value: Any, default: Any) -> Any:
    """Coerce a (possibly string) setting to the type of its default, with an error naming the key."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return value.lower() in ("true", "1")
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"cache.{key}={value!r} is not a valid {type(default).__name__} for cache={name}") from None
    return value


def registry() -> dict[str, type[CachePolicy]]:
    from .d2cache import D2Cache
    from .dllm import DLLMCache
    from .elastic import ElasticCache
    from .none import NoCache
    from .prefix import PrefixCache

    return {cls.name: cls for cls in (NoCache, PrefixCache, DLLMCache, D2Cache, ElasticCache)}


def resolve_cache(cache: str | dict | None) -> tuple[type[CachePolicy], dict[str, Any]]:
    """`None` | "prefix" | {"name": "dllm", "kp": 50, ...} -> (policy class, full settings)."""
    if cache is None:
        cache = {"name": "null"}
    elif isinstance(cache, str):
        cache = {"name": cache}
    elif not isinstance(cache, dict):
        raise TypeError(f"cache must be None, a name or a dict with 'name', not {type(cache).__name__}")
    cache = dict(cache)
    name = str(cache.pop("name", "null"))
    name = "null" if name.lower() in ("none", "null") else name
    policies = registry()
    if name not in policies:
        raise ValueError(f"unknown cache '{name}'; valid choices: {sorted(policies)}")
    cls = policies[name]
    unknown = sorted(set(cache) - set(cls.params))
    if unknown:
        valid = sorted(cls.params) or "none"
        raise ValueError(f"unknown parameter(s) {unknown} for cache={name}; valid parameters: {valid}")
    settings = {key: coerce(name, key, cache.get(key, default), default) for key, default in cls.params.items()}
    return cls, settings
