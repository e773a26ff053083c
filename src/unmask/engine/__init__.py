"""The cache engine: per-request stores, step plans, and the partial forward that executes them."""

from .forward import StepOutput, run_plan, source_positions
from .plan import StepPlan
from .rows import Rows
from .state import CanvasState, make_state

__all__ = ["CanvasState", "Rows", "StepOutput", "StepPlan", "make_state", "run_plan", "source_positions"]
