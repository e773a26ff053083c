"""Data and scoring of the `arith` lm-eval task: unmask's own, so lm-eval and `unmask eval`
read the same problems and judge an output alike."""

from __future__ import annotations

from typing import Any


def load_split(**_: Any):
    """The shipped evaluation split as a `datasets.DatasetDict` with one `test` split.

    lm-eval passes the task metadata and the model arguments as keywords; none of them select data."""
    import datasets

    from unmask.tasks import arith

    rows = arith.eval_split(arith.EVAL_FILE)
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([{k: str(r[k]) for k in ("id", "question", "answer")} for r in rows])})


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """exact_match as `unmask eval` scores arith: the `#### n` number, else the last number."""
    from unmask.tasks.arith_task import ArithTask
    from unmask.tasks.base import Sample

    score = ArithTask().score(Sample(id=doc["id"], prompt=doc["question"], reference=doc["answer"]), results[0])
    return {"exact_match": float(score.correct)}
