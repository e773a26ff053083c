"""MBPP in the 3-shot `[BEGIN] ... [DONE]` format of Austin et al. (2021), scored in the sandbox.

Each item reads "You are an expert Python programmer, and here is your task: {text} Your code
should pass these tests:\\n\\n{tests}\\n[BEGIN]\\n", a shot continues with its code and "\\n[DONE]",
and shots are followed by a blank line. That is lm-eval's `mbpp` prompt, character for character
(tests/test_prompt_agreement.py): the text and the shots' code are used verbatim, so the code keeps
the dataset's `\\r\\n` line ends and trailing spaces, as lm-eval's prompt does. The shots are task
ids 2, 3 and 4 (prompt split); evaluation is on the test split (task ids 11-510). The official
splits are ranges of task ids, so the original single `mbpp.jsonl` (all 974 problems) works as
`dataset.path` too.
"""

from __future__ import annotations

from pathlib import Path

from . import code_extract, loading, sandbox
from .base import Sample, Score, Task
from .prompting import check_n_shot, cut_at_stops

HUB = loading.HubDataset("google-research-datasets/mbpp", "full")
FIELDS = "task_id, text (or prompt), code, test_list; optional test_setup_code, test_imports"
SHOT_IDS = (2, 3, 4)
SPLIT_IDS = {"prompt": range(1, 11), "test": range(11, 511), "validation": range(511, 601), "train": range(601, 975)}


def format_task(text: str, tests: list[str]) -> str:
    return (
        f"You are an expert Python programmer, and here is your task: {text} "
        f"Your code should pass these tests:\n\n" + "\n".join(tests) + "\n[BEGIN]\n"
    )


def _normalize(row: dict, where: str) -> dict:
    tests = loading.field(row, ("test_list", "tests"), where)
    if isinstance(tests, str):
        tests = [tests]
    imports = row.get("test_imports") or []  # the sanitized config's imports the tests need
    setup = "\n".join([str(row.get("test_setup_code") or ""), *map(str, imports)]).strip()
    return {
        "task_id": int(loading.field(row, ("task_id",), where)),
        "text": str(loading.field(row, ("text", "prompt"), where)),
        "code": str(row.get("code") or ""),  # verbatim: the few-shot prompt shows it as lm-eval does
        "tests": [str(t) for t in tests],
        "setup": setup.replace("\r\n", "\n"),
    }


class MBPPTask(Task):
    name = "mbpp"
    default_gen_length = 512
    default_n_shot = 3
    executes_code = True
    use_chat_template = False
    eval_split = "test"
    timeout_s = 5.0
    memory_mb = 1024

    def __init__(self, n_shot: int | None = None, path: str | None = None, split: str | None = None) -> None:
        super().__init__(n_shot=n_shot, path=path, split=split)
        check_n_shot(self.name, self.n_shot, len(SHOT_IDS))

    def _rows(self, split: str, evaluated: bool) -> list[dict]:
        raw = loading.load_split(self.name, HUB, self.path, split, FIELDS, evaluated=evaluated)
        return [_normalize(r, f"{self.name} {split} row {i}") for i, r in enumerate(raw)]

    def _eval_rows(self, split: str) -> tuple[list[dict], list[dict]]:
        """(rows to evaluate, all rows read): a file spanning several official splits (the original
        mbpp.jsonl) is cut to `split`'s task ids; any other single file is one split."""
        rows = self._rows(split, evaluated=True)
        is_file = self.path is not None and Path(self.path).expanduser().is_file()
        if not is_file:
            return rows, rows
        spans = {name for name, ids in SPLIT_IDS.items() for r in rows if r["task_id"] in ids}
        if len(spans) > 1:
            if split not in SPLIT_IDS:
                raise ValueError(f"{self.name}: dataset.split must be one of {', '.join(SPLIT_IDS)}, got {split!r}")
            return [r for r in rows if r["task_id"] in SPLIT_IDS[split]], rows
        loading.check_file_split(self.path, self.split)
        return rows, rows

    def _shots(self, pool: list[dict]) -> list[dict]:
        if self.n_shot == 0:
            return []
        wanted = SHOT_IDS[: self.n_shot]
        by_id = {r["task_id"]: r for r in pool}
        if not all(i in by_id for i in wanted):
            by_id.update({r["task_id"]: r for r in self._rows("prompt", evaluated=False)})
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise loading.DatasetUnavailable(f"{self.name}: few-shot task ids {missing} are not in the prompt split")
        return [by_id[i] for i in wanted]

    def load(self) -> list[Sample]:
        split = self.split or self.eval_split
        rows, pool = self._eval_rows(split)
        shots = self._shots(pool)
        shot_ids = {s["task_id"] for s in shots}
        prefix = "".join(format_task(s["text"], s["tests"]) + s["code"] + "\n[DONE]\n\n" for s in shots)
        samples = []
        for row in rows:
            if row["task_id"] in shot_ids:
                continue  # never evaluate on an example shown in the prompt
            reference = {"tests": row["tests"], "setup": row["setup"]}
            samples.append(Sample(id=str(row["task_id"]), prompt=prefix + format_task(row["text"], row["tests"]), reference=reference))
        return samples

    def stop_strings(self) -> list[str]:
        return ["[DONE]"]

    def score(self, sample: Sample, output: str) -> Score:
        code = code_extract.mbpp_code(cut_at_stops(output, self.stop_strings()))
        ref = sample.reference
        source = f"{ref['setup']}\n{code}\n\n" + "\n".join(ref["tests"]) + "\n"
        result = sandbox.run_program(source, timeout=self.timeout_s, memory_mb=self.memory_mb)
        return Score(extracted=code, correct=result.passed, detail=result.summary)
