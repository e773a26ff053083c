"""Task names (as `dataset.name=` spells them) to task classes."""

from __future__ import annotations

from .arith_task import ArithTask
from .base import Task
from .gsm8k import GSM8KTask
from .humaneval import HumanEvalInstructTask, HumanEvalTask
from .math500 import Math500Task
from .mathverse import MathVerseTask
from .mathvista import MathVistaTask
from .mbpp import MBPPTask

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (ArithTask, GSM8KTask, Math500Task, HumanEvalTask, HumanEvalInstructTask, MBPPTask)
}
TASKS.update({cls.name: cls for cls in (MathVistaTask, MathVerseTask)})  # image benchmarks (LLaDA-V)


def get_task(name: str, **kwargs) -> Task:
    """An instance of the named task; unknown names list the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown dataset.name={name!r}; valid: {', '.join(sorted(TASKS))}")
    return TASKS[name](**kwargs)
