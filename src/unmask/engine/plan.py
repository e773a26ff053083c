"""A step's context and plan: what the loop knows at a step's start, and what the step computes.

Policies read the context and write plans; the engine executes them. A method whose forward is not
a row selection (dLLM-Cache's branch reuse) has its own plan type and forward (`CachePolicy.forward`);
the loop reads only `logit_positions` from a plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from .rows import Rows

# Called after each layer with (layer index, attention probs [B,H,P,T] of `prob_positions` or None,
# [B] bool sequences already refreshing); returns [B] bool sequences that must recompute deeper layers over
# all rows, or None. By default the triggering layer itself is run again over all rows (and the hook called
# again); with `StepPlan.refresh_next` it keeps its result and the refresh starts at the next layer.
LayerHook = Callable[[int, Tensor | None, Tensor], Tensor | None]


@dataclass
class StepContext:
    """What the denoising loop knows at the start of a step."""

    step: int  # steps taken in this generation
    block_step: int  # steps taken in the current block
    block: tuple[int, int]  # current block [start, end) in canvas positions
    gen_start: int  # first generated position
    masked: Tensor  # [B, T] bool, still-masked positions of active sequences


@dataclass
class StepPlan:
    rows: Rows  # rows computed from layer 0 upward
    logit_positions: Rows  # canvas positions whose token predictions are needed
    refresh_from: int | None = None  # layers >= this recompute every row (needs the layer-input store)
    prob_positions: Tensor | None = None  # [B, P] canvas positions whose attention probabilities are needed
    layer_hook: LayerHook | None = None
    refresh_next: bool = False  # a layer_hook trigger refreshes from the next layer, not the triggering one
    # [B] bool, sequences whose `rows` are all their rows; None: every sequence's iff `rows` spans the canvas
    # (a batch of several requests' plans, `engine.slots`, says it per sequence)
    full_rows: Tensor | None = None
    # False: no later step reads this step's K/V (the baseline recomputes every row each step), so the layers
    # attend to the fresh K/V without writing them to the store
    store_kv: bool = True
