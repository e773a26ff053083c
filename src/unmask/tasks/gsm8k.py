"""GSM8K in lm-evaluation-harness's format: n-shot "Question: ...\\nAnswer: ..." completion prompts.

Few-shot examples are the first n rows of the train split (file order), each with its full
worked solution. Scoring follows answers.py: the number after `####` (strict), or the last
number when the output has no `####` (flexible); `detail` records both readings.
"""

from __future__ import annotations

from . import answers, loading
from .base import Sample, Score, Task
from .prompting import cut_at_stops

HUB = loading.HubDataset("openai/gsm8k", "main")
FIELDS = "question, answer (the worked solution ending in '#### <number>')"
QUESTION_FIELDS = ("question", "problem", "input")
ANSWER_FIELDS = ("answer", "target", "solution")


def format_question(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


class GSM8KTask(Task):
    name = "gsm8k"
    default_gen_length = 256
    default_n_shot = 5
    use_chat_template = False
    eval_split = "test"
    shot_split = "train"

    def _rows(self, split: str, evaluated: bool) -> list[tuple[str, str, dict]]:
        rows = loading.load_split(self.name, HUB, self.path, split, FIELDS, evaluated=evaluated)
        out = []
        for i, row in enumerate(rows):
            where = f"{self.name} {split} row {i}"
            question = str(loading.field(row, QUESTION_FIELDS, where))
            answer = str(loading.field(row, ANSWER_FIELDS, where))
            out.append((question, answer, row))
        return out

    def few_shot_prefix(self) -> str:
        """The first `n_shot` train examples, each followed by a blank line."""
        if self.n_shot == 0:
            return ""
        shots = self._rows(self.shot_split, evaluated=False)
        if len(shots) < self.n_shot:
            raise ValueError(f"{self.name}: dataset.n_shot={self.n_shot} but the {self.shot_split} split has {len(shots)} rows")
        return "".join(f"{format_question(q)} {a.strip()}\n\n" for q, a, _ in shots[: self.n_shot])

    def load(self) -> list[Sample]:
        loading.check_file_split(self.path, self.split)
        split = self.split or self.eval_split
        rows = self._rows(split, evaluated=True)
        prefix = self.few_shot_prefix()
        samples = []
        for i, (question, answer, row) in enumerate(rows):
            sample_id = str(row["id"]) if row.get("id") is not None else f"{self.name}-{split}-{i}"
            samples.append(Sample(id=sample_id, prompt=prefix + format_question(question), reference=answer))
        return samples

    def stop_strings(self) -> list[str]:
        return ["Question:", "</s>", "<|im_end|>"]

    def score(self, sample: Sample, output: str) -> Score:
        text = cut_at_stops(output, self.stop_strings())
        extracted = answers.extract_answer(text)
        return Score(
            extracted=extracted,
            correct=answers.answer_matches(extracted, sample.reference),
            detail=f"strict={answers.extract_strict(text)} flexible={answers.extract_flexible(text)}",
        )
