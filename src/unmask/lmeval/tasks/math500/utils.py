"""Scoring for unmask's MATH-500 lm-eval task: the same extraction and equivalence as `unmask eval
dataset.name=math-500`, so both harnesses judge an answer alike."""

from __future__ import annotations

from unmask.tasks import math_answers


def process_docs(dataset):
    """Every row gets its gold `answer` (rows that carry only a solution: its last \\boxed{})."""
    return dataset.map(lambda doc: {"answer": math_answers.reference_answer(doc.get("answer"), doc.get("solution"))})


def process_results(doc: dict, results: list[str]) -> dict[str, int]:
    """exact_match = 1 when the output's final answer is equivalent to the reference answer."""
    extracted = math_answers.extract_answer(results[0])
    return {"exact_match": int(math_answers.equivalent(extracted, doc["answer"]))}
