"""MathVerse testmini as LLaDA-V evaluated it (its lmms-eval copy, group `mathverse_testmini_vision`).

Splits: the default `testmini_vision` is what LLaDA-V reports, the three vision versions
(vision_intensive, vision_dominant, vision_only; 788 problems each) in that order. `dataset.split`
may also name one version (text_dominant, text_lite, text_only or a vision one) or `testmini`
(all five versions of the hub's `testmini` config).

Prompt: the record's ready-made query, `query_cot` for the vision versions and `query_wo` for the
text versions and `testmini` (the "format-prompt" setting, no hint added). A record with an image
is shown as "<image>\\n" + query + " /think" (the evaluation script's think mode); a record
without one (text_only) gets the bare query, as the official model wrapper does.

Scoring: the official scorer keeps the reply's last 30 words, asks GPT to extract the answer, then
asks GPT whether it matches the standard answer. unmask does both steps by rule: the text after
the last "Answer:" / "answer is" in those 30 words; multiple choice compares option letters,
free-form answers are compared as math (unmask's MATH equivalence, which runs math-verify) or,
for numeric answers, by the first number in the extracted text.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from . import image_records, loading, math_answers
from .base import Sample, Score, Task
from .mathvista import IMAGE_TEXT, THINK_SUFFIX, answer_segment, clean_reply

REPO = "CaraJ/MathVerse-lmmseval"
FIELDS = "sample_index, problem_version, question_type, answer, query_cot / query_wo, image"
TRUNCATE_WORDS = 30

# version split -> (hub config, query field), as LLaDA-V's lmms-eval task files set them
VERSIONS: dict[str, tuple[str, str]] = {
    "text_dominant": ("testmini_version_split", "query_wo"),
    "text_lite": ("testmini_version_split", "query_wo"),
    "text_only": ("testmini_text_only", "query_wo"),
    "vision_intensive": ("testmini_version_split", "query_cot"),
    "vision_dominant": ("testmini_version_split", "query_cot"),
    "vision_only": ("testmini_version_split", "query_cot"),
}
GROUPS: dict[str, tuple[str, ...]] = {
    "testmini_vision": ("vision_intensive", "vision_dominant", "vision_only"),
    "testmini": tuple(VERSIONS),
}
ALL_QUERY = "query_wo"  # the `testmini` config's task prompt

_LETTER_PATTERNS = (
    re.compile(r"^\(?([A-H])\)?(?=$|[\s.:),\]])"),
    re.compile(r"\b(?:option|choice)\s*\(?([A-H])\)?(?![a-zA-Z])", re.IGNORECASE),
    re.compile(r"\(([A-H])\)"),
)
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")


def version_of(row: dict[str, Any], where: str) -> str:
    return str(loading.field(row, ("problem_version",), where)).strip().lower().replace(" ", "_")


def truncate(response: str) -> str:
    """The official scorer's view of a reply: its last 30 space-separated words."""
    return " ".join(response.split(" ")[-TRUNCATE_WORDS:])


def extract_letter(segment: str) -> str | None:
    for pattern in _LETTER_PATTERNS:
        found = pattern.search(segment)
        if found:
            return found.group(1).upper()
    return None


def _number(text: str) -> float | None:
    found = _NUMBER.search(text)
    if found is None:
        return None
    try:
        return float(found.group(0).replace(",", ""))
    except ValueError:
        return None


def judge(extraction: str, answer: str, question_type: str) -> bool:
    """unmask's rule-based stand-in for the official GPT judgement."""
    if not extraction:
        return False
    gold = answer.strip()
    if question_type == "multi-choice" and re.fullmatch(r"[A-Ha-h]", gold):
        return extract_letter(extraction) == gold.upper()
    if math_answers.equivalent(extraction, gold):
        return True
    try:
        gold_value = float(gold.replace(",", ""))
    except ValueError:
        return False
    value = _number(extraction)
    return value is not None and math.isclose(value, gold_value, rel_tol=1e-9, abs_tol=1e-9)


class MathVerseTask(Task):
    name = "mathverse"
    default_gen_length = 64  # LLaDA-V's evaluation: gen_length 64, block_length 64, 32 steps
    default_n_shot = 0
    use_chat_template = True
    eval_split = "testmini_vision"

    def __init__(self, n_shot: int | None = None, path: str | None = None, split: str | None = None) -> None:
        super().__init__(n_shot=n_shot, path=path, split=split)
        if self.n_shot != 0:
            raise ValueError(f"{self.name}: dataset.n_shot={self.n_shot}; LLaDA-V evaluated MathVerse zero-shot, the only setting unmask implements")
        split = self.split or self.eval_split
        if split not in GROUPS and split not in VERSIONS:
            raise ValueError(f"{self.name}: dataset.split={split!r} is not one of {', '.join([*GROUPS, *VERSIONS])}")

    @property
    def versions(self) -> tuple[str, ...]:
        split = self.split or self.eval_split
        return GROUPS.get(split, (split,))

    def _rows(self) -> tuple[list[dict[str, Any]], list[Path]]:
        """Rows (any versions; load keeps the split's) and the folders for relative image names."""
        split = self.split or self.eval_split
        if self.path is None:
            if split == "testmini":
                return image_records.load_rows(self.name, loading.HubDataset(REPO, "testmini"), None, "testmini", FIELDS)
            rows = [row for v in self.versions for row in image_records.load_rows(self.name, loading.HubDataset(REPO, VERSIONS[v][0]), None, v, FIELDS)[0]]
            return rows, []
        given = Path(self.path).expanduser()
        if given.is_dir() and not image_records.split_files(given, split):
            # a directory without the split's own file: one file per version, else a testmini file
            per_version = [image_records.split_files(given, v) for v in self.versions]
            if len(per_version) > 1 and all(per_version):
                rows = [row for files in per_version for f in files for row in image_records.read_rows(f)]
                return rows, list(dict.fromkeys([per_version[0][0].parent, given]))
            if image_records.split_files(given, "testmini"):
                split = "testmini"
        return image_records.load_rows(self.name, None, self.path, split, FIELDS)

    def load(self) -> list[Sample]:
        split = self.split or self.eval_split
        rows, folders = self._rows()
        wanted = set(self.versions)
        samples = []
        for i, row in enumerate(rows):
            where = f"{self.name} row {i}"
            version = version_of(row, where)
            if version not in VERSIONS:
                raise ValueError(f"{where}: unknown problem_version {row.get('problem_version')!r}")
            if version not in wanted:
                continue
            sample_id = str(loading.field(row, ("sample_index",), where))
            where = f"{self.name} {version} sample_index {sample_id}"
            query_field = ALL_QUERY if split == "testmini" else VERSIONS[version][1]
            query = str(loading.field(row, (query_field,), where)).strip()
            image = image_records.record_image(row.get("image"), folders, where)
            prompt = f"{IMAGE_TEXT}\n{query}{THINK_SUFFIX}" if image is not None else query
            meta = {"question_type": str(loading.field(row, ("question_type",), where)), "problem_version": version}
            samples.append(Sample(id=sample_id, prompt=prompt, reference=str(loading.field(row, ("answer",), where)), meta=meta,
                                  images=() if image is None else (image,)))
        if not samples:
            raise ValueError(f"{self.name}: no rows of version {', '.join(self.versions)} in the data (check dataset.path / dataset.split)")
        return samples

    def score(self, sample: Sample, output: str) -> Score:
        prediction = truncate(clean_reply(output))
        extraction, _ = answer_segment(prediction)
        correct = judge(extraction, str(sample.reference), sample.meta["question_type"])
        return Score(extracted=extraction, correct=correct, detail="rule-based extraction and judgement")
