"""The bundled `arith` task as an evaluation task: the shipped split, the model's chat template,
GSM8K's answer scoring."""

from __future__ import annotations

from . import answers, arith
from .base import Sample, Score, Task


class ArithTask(Task):
    name = "arith"
    default_gen_length = 256
    use_chat_template = True

    def load(self) -> list[Sample]:
        rows = arith.eval_split(self.path or arith.EVAL_FILE)
        return [Sample(id=str(r["id"]), prompt=r["question"], reference=r["answer"]) for r in rows]

    def score(self, sample: Sample, output: str) -> Score:
        extracted = answers.extract_answer(output)
        return Score(extracted=extracted, correct=answers.answer_matches(extracted, sample.reference))
