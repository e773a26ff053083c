"""The interface every evaluation task implements, so the runner, `unmask bench` and tests treat
GSM8K, MATH-500, HumanEval, MBPP and the bundled `arith` task alike.

A task turns its data into `Sample`s (an id, the prompt text the model sees, the reference), and
scores one model output into a `Score`. Prompt formatting (few-shot, chat or not) is the task's
job; the runner only decodes. Tasks that run generated code say so with `executes_code`, and the
runner refuses them unless the user opted in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Sample:
    """One evaluation item. `id` is stable across runs (records and resume key on it)."""

    id: str
    prompt: str
    reference: Any
    meta: dict[str, Any] = field(default_factory=dict)
    images: tuple = ()


@dataclass(frozen=True)
class Score:
    """What the runner records for one output: the extracted answer and whether it is right."""

    extracted: str | None
    correct: bool
    detail: str = ""


class Task:
    """Base class. Subclasses set the class attributes and implement `load` and `score`."""

    name: ClassVar[str] = ""
    default_gen_length: ClassVar[int] = 512
    default_n_shot: ClassVar[int] = 0
    executes_code: ClassVar[bool] = False
    # Apply the model's chat template to `Sample.prompt` (instruct-style tasks); False for raw
    # few-shot completion prompts.
    use_chat_template: ClassVar[bool] = True

    def __init__(self, n_shot: int | None = None, path: str | None = None, split: str | None = None) -> None:
        self.n_shot = self.default_n_shot if n_shot is None else int(n_shot)
        if self.n_shot < 0:
            raise ValueError(f"dataset.n_shot must be >= 0, got {n_shot}")
        self.path = path
        self.split = split

    def load(self) -> list[Sample]:
        """All samples of the evaluation split in a fixed order (the runner applies size limits)."""
        raise NotImplementedError

    def score(self, sample: Sample, output: str) -> Score:
        """Extract the answer from one model output and judge it against `sample.reference`."""
        raise NotImplementedError

    def stop_strings(self) -> list[str]:
        """Text after which an output is cut before scoring (few-shot formats end an answer early)."""
        return []
