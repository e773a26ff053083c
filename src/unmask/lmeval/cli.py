"""`unmask lm-eval ARGS`: lm-eval's command line, unchanged, with unmask's model and tasks.

    unmask lm-eval --model unmask --model_args model=tiny --tasks arith --limit 20

Registers `--model unmask`, adds unmask's task directory to every TaskManager lm-eval's command
builds (before any `--include_path` of yours, so yours wins on a name clash), then runs lm-eval's
own `cli_evaluate` on ARGS. Needed because lm-eval up to 0.4.13 does not discover models from
installed packages.
"""

from __future__ import annotations

import sys


def _add_unmask_tasks() -> None:
    """Make lm-eval's TaskManager (as its command line imports it) also search unmask's tasks."""
    import lm_eval.tasks

    from . import include_paths

    base = lm_eval.tasks.TaskManager
    if getattr(base, "adds_unmask_tasks", False):
        return

    class WithUnmaskTasks(base):  # type: ignore[misc, valid-type]
        adds_unmask_tasks = True

        def __init__(self, *args, include_path=None, **kwargs):
            super().__init__(*args, include_path=include_paths(include_path), **kwargs)

    lm_eval.tasks.TaskManager = WithUnmaskTasks


def main(argv: list[str] | None = None) -> int:
    """Run lm-eval's CLI on `argv` (default: sys.argv[1:]) with unmask registered."""
    from . import INSTALL_HINT, register

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        register()
    except ModuleNotFoundError as exc:
        if str(exc) == INSTALL_HINT:
            print(f"unmask lm-eval: error: {INSTALL_HINT}", file=sys.stderr)
            return 2
        raise
    _add_unmask_tasks()
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
