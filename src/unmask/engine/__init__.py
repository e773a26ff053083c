"""The cache engine: per-request stores, step plans, the partial forward that executes them, and
the denoising loop that drives them (`engine.loop`, imported from there)."""

from .forward import StepOutput, run_plan, source_positions
from .plan import StepContext, StepPlan
from .rows import Rows
from .state import CanvasState, make_state

__all__ = ["CanvasState", "Rows", "StepContext", "StepOutput", "StepPlan", "make_state", "run_plan", "source_positions"]
