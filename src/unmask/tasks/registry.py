"""Task names (as `dataset.name=` spells them) to task classes."""

from __future__ import annotations

from .arith_task import ArithTask
from .base import Task

TASKS: dict[str, type[Task]] = {ArithTask.name: ArithTask}


def get_task(name: str, **kwargs) -> Task:
    """An instance of the named task; unknown names list the valid ones."""
    if name not in TASKS:
        raise ValueError(f"unknown dataset.name={name!r}; valid: {', '.join(sorted(TASKS))}")
    return TASKS[name](**kwargs)
