"""unmask inside lm-evaluation-harness (the optional extra `unmask[lm-eval]`).

- `UnmaskLM` (`unmask.lmeval.model`): lm-eval's `--model unmask`, registered when that module is
  imported (`import unmask.lmeval.model`, or `unmask.lmeval.register()`).
- `TASKS_DIR`: unmask's lm-eval task YAMLs (`arith` on the shipped split); `task_manager()` is an
  lm-eval TaskManager that finds them.
- `unmask lm-eval ARGS` (`unmask.lmeval.cli`): lm-eval's own command line with both registered.
  lm-eval up to 0.4.13 does not discover models from installed packages, so a plain
  `lm_eval --model unmask` does not find the model; this command is the way in.
- `harness.py`: lm-eval's task definitions inside `unmask eval` (`harness=lm-eval`).

Importing this package does not import lm-eval, so `unmask` works without the extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
INSTALL_HINT = "lm-eval is not installed; install it with: pip install 'unmask[lm-eval]'"


def register() -> type:
    """Register `--model unmask` with lm-eval and return the model class."""
    try:
        from .model import UnmaskLM
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == "lm_eval":
            raise ModuleNotFoundError(INSTALL_HINT) from None
        raise
    return UnmaskLM


def include_paths(include_path: Any = None) -> list[str]:
    """unmask's task directory, then the caller's own include paths (which win on a name clash)."""
    if include_path is None:
        extra = []
    elif isinstance(include_path, (list, tuple)):
        extra = [str(p) for p in include_path]
    else:
        extra = [str(include_path)]
    return [str(TASKS_DIR), *extra]


def task_manager(include_path: Any = None, **kwargs: Any):
    """An lm-eval `TaskManager` that also finds unmask's tasks (pass it to `simple_evaluate`)."""
    register()
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_paths(include_path), **kwargs)
