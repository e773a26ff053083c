"""GSM8K in lm-evaluation-harness's format: n-shot "Question: ...\\nAnswer: ..." completion prompts.

The prompts equal lm-eval's `gsm8k` task rendered by one process (tests/test_prompt_agreement.py):
each evaluated document gets its own n train examples, drawn the way lm-eval's default few-shot
sampler draws them: one `random.Random(1234)` (simple_evaluate's fewshot_random_seed) samples n
distinct train rows per document, document after document in file order. So a sample's prompt
depends on its position in the split, not on `dataset.limit`, sharding or resume. Questions and
worked solutions are used verbatim (no stripping), as lm-eval's templates render them.

Scoring follows answers.py: the number after `####` (strict), or the last number when the output
has no `####` (flexible); `detail` records both readings.
"""

from __future__ import annotations

import random

from . import answers, loading
from .base import Sample, Score, Task
from .prompting import cut_at_stops

HUB = loading.HubDataset("openai/gsm8k", "main")
FIELDS = "question, answer (the worked solution ending in '#### <number>')"
QUESTION_FIELDS = ("question", "problem", "input")
ANSWER_FIELDS = ("answer", "target", "solution")
FEWSHOT_SEED = 1234  # lm_eval.simple_evaluate's default fewshot_random_seed


def format_question(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def few_shot_draws(pool: list, n_shot: int, docs: list, *, same_split: bool, seed: int = FEWSHOT_SEED) -> list[list[int]]:
    """Indices into `pool` of each document's few-shot examples, as lm-eval's default sampler
    (ContextSampler) draws them with one seeded generator for all documents in order. When the
    shots come from the evaluated split itself it draws n + 1 and drops rows equal to the
    document (resampling from the pool without them if that leaves fewer than n)."""
    rnd = random.Random(seed)
    draws = []
    for doc in docs:
        if not same_split:
            draws.append(rnd.sample(range(len(pool)), n_shot))
            continue
        picked = [j for j in rnd.sample(range(len(pool)), n_shot + 1) if pool[j] != doc][:n_shot]
        if len(picked) < n_shot:
            others = [j for j in range(len(pool)) if pool[j] != doc]
            picked = [others[k] for k in rnd.sample(range(len(others)), n_shot)]
        draws.append(picked)
    return draws


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

    def few_shot_prefixes(self, rows: list[tuple[str, str, dict]], split: str) -> list[str]:
        """Each evaluated row's few-shot block: its drawn train examples, each followed by a blank line."""
        if self.n_shot == 0:
            return [""] * len(rows)
        shots = self._rows(self.shot_split, evaluated=False)
        if len(shots) < self.n_shot + (split == self.shot_split):
            raise ValueError(f"{self.name}: dataset.n_shot={self.n_shot} but the {self.shot_split} split has {len(shots)} rows")
        draws = few_shot_draws([r for _, _, r in shots], self.n_shot, [r for _, _, r in rows], same_split=split == self.shot_split)
        return ["".join(f"{format_question(shots[j][0])} {shots[j][1]}\n\n" for j in drawn) for drawn in draws]

    def load(self) -> list[Sample]:
        loading.check_file_split(self.path, self.split)
        split = self.split or self.eval_split
        rows = self._rows(split, evaluated=True)
        prefixes = self.few_shot_prefixes(rows, split)
        samples = []
        for i, ((question, answer, row), prefix) in enumerate(zip(rows, prefixes)):
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
