"""MathVista testmini as LLaDA-V evaluated it (its lmms-eval copy, task `mathvista_testmini`).

Prompt: LLaDA-V's `mathvista_testmini` group runs the "reason-first" zero-shot query: "Question:
..." (with " (Unit: u)"), the choices as "(A) ..." lines, a hint that asks for reasoning and a
final "Answer: xxx" (worded by question and answer type and float precision), and "If it is hard
to determine, give the closest answer.". The model sees "<image>\\n" + query + " /think" (the
evaluation script's think mode for this task), inside the chat template.

Scoring follows MathVista's official scorer: the model's reply loses one trailing period, the
answer is extracted, normalized (an option letter or "(B)" becomes that choice's text, else the
choice nearest by edit distance; integers via int(float(x)); floats rounded to the record's
precision; lists as text) and compared as a string with the record's answer. The official
extractor asks GPT when the reply is not already a bare answer; unmask extracts by rule instead
(`rule_extract`): the text after the last "Answer:" / "answer is", then an option letter, the
first number, or a [list] in it.
"""

from __future__ import annotations

import re
from typing import Any

from . import image_records, loading
from .base import Sample, Score, Task

HUB = loading.HubDataset("AI4Math/MathVista")
FIELDS = "pid, question, decoded_image (or image), choices, unit, precision, answer, question_type, answer_type"
IMAGE_TEXT = "<image>"
THINK_SUFFIX = " /think"
CLOSING = "If it is hard to determine, give the closest answer."

_HINT_PREFIX = "First perform reasoning, then finally"
_HINTS = {
    "multi_choice": f"{_HINT_PREFIX} select the question from the choices in the following format: Answer: xxx.",
    "integer": f"{_HINT_PREFIX} answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3, at the end in the following format: Answer: xxx.",
    "float1": f"{_HINT_PREFIX} answer the question requiring a floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end in the following format: Answer: xxx.",
    "float2": f"{_HINT_PREFIX} answer the question requiring a floating-point number with two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at the end in the following format: Answer: xxx.",
    "list": f"{_HINT_PREFIX} answer the question requiring a Python list as an answer and provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end in the following format: Answer: xxx.",
}

_MARKER = re.compile(r"answer\s*(?:is\s*:?|:)", re.IGNORECASE)
_LEADING_LETTER = re.compile(r"^\(?([A-Z])\)?(?=$|[\s.:),\]])")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_LIST = re.compile(r"\[[^\[\]]*\]")
_PAREN_LETTER = re.compile(r"\(([a-zA-Z])\)")


def hint(question_type: str, answer_type: str, precision: Any, where: str) -> str:
    """The reason-first hint; the record types the official prompt has no wording for are refused."""
    if question_type == "multi_choice":
        if answer_type != "text":
            raise ValueError(f"{where}: a multi_choice question must have answer_type 'text', got {answer_type!r}")
        return _HINTS["multi_choice"]
    if answer_type == "float":
        key = {1: "float1", 2: "float2"}.get(_as_int(precision))
        if key is None:
            raise ValueError(f"{where}: float answers need precision 1 or 2 (the official prompt words only those), got {precision!r}")
        return _HINTS[key]
    if answer_type in ("integer", "list"):
        return _HINTS[answer_type]
    raise ValueError(f"{where}: answer_type {answer_type!r} is not integer, float, list or text")


def build_query(row: dict[str, Any], where: str) -> str:
    """The reason-first zero-shot query text (no image marker, no think suffix)."""
    question = str(loading.field(row, ("question",), where))
    unit = row.get("unit") or ""
    choices = list(row.get("choices") or [])
    question_text = f"Question: {question}" + (f" (Unit: {unit})" if unit else "")
    choices_text = "\n".join(["Choices:", *(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices))]) if choices else ""
    hint_text = hint(str(row.get("question_type")), str(row.get("answer_type")), row.get("precision"), where)
    return "\n".join(e for e in (question_text, choices_text, hint_text, CLOSING) if e).strip()


def clean_reply(output: str) -> str:
    """What LLaDA-V's lmms-eval model hands the scorer: one trailing period dropped, then stripped."""
    return (output[:-1] if output.endswith(".") else output).strip()


def official_quick_extract(response: str, question_type: str, answer_type: str, choices: list[str]) -> str | None:
    """The official extractor's steps before it calls GPT (None: it would call GPT now)."""
    if not response:
        return ""
    if question_type == "multi_choice" and response in choices:
        return response
    if answer_type == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if answer_type == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    return None


def answer_segment(response: str) -> tuple[str, bool]:
    """The text after the last "Answer:" / "answer is" (and whether one was found), tidied."""
    found = list(_MARKER.finditer(response))
    segment = response[found[-1].end():] if found else response
    segment = segment.strip().strip("*").strip().strip("$").strip()
    return segment.rstrip("."), bool(found)


def rule_extract(response: str, question_type: str, answer_type: str, choices: list[str]) -> str:
    """unmask's rule-based stand-in for the official GPT extraction step."""
    segment, marked = answer_segment(response)
    if question_type == "multi_choice":
        letter = _LEADING_LETTER.match(segment) if marked else None
        if letter and ord(letter.group(1)) - ord("A") < len(choices):
            return letter.group(1)
        return segment
    if answer_type in ("integer", "float"):
        numbers = _NUMBER.findall(segment)
        if not numbers:
            return ""
        return (numbers[0] if marked else numbers[-1]).replace(",", "")
    if answer_type == "list":
        lists = _LIST.findall(segment)
        return lists[-1] if lists else segment
    return segment


def normalize_extraction(extraction: Any, choices: list[str], question_type: str, answer_type: str, precision: Any) -> str | None:
    """MathVista's official normalization of an extracted answer (see the module docstring)."""
    if question_type == "multi_choice":
        text = extraction.strip() if isinstance(extraction, str) else str(extraction)
        letters = _PAREN_LETTER.findall(text)
        if letters:
            text = letters[0].upper()
        options = [chr(ord("A") + i) for i in range(len(choices))]
        if text in options:
            return choices[options.index(text)]
        distances = [image_records.edit_distance(text, c) for c in choices]
        return choices[distances.index(min(distances))]
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            return str(round(float(extraction), int(precision)))
    except (TypeError, ValueError, OverflowError):
        return None
    if answer_type == "list":
        return str(extraction)
    return extraction


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if float(value) == int(value) else None
    except (TypeError, ValueError, OverflowError):
        return None


class MathVistaTask(Task):
    name = "mathvista"
    default_gen_length = 96  # LLaDA-V's evaluation: gen_length 96, block_length 96, 48 steps
    default_n_shot = 0
    use_chat_template = True
    eval_split = "testmini"

    def __init__(self, n_shot: int | None = None, path: str | None = None, split: str | None = None) -> None:
        super().__init__(n_shot=n_shot, path=path, split=split)
        if self.n_shot != 0:
            raise ValueError(f"{self.name}: dataset.n_shot={self.n_shot}; LLaDA-V evaluated MathVista zero-shot, the only setting unmask implements")

    def load(self) -> list[Sample]:
        split = self.split or self.eval_split
        rows, folders = image_records.load_rows(self.name, HUB, self.path, split, FIELDS)
        samples = []
        for i, row in enumerate(rows):
            sample_id = str(row.get("pid") or f"{self.name}-{split}-{i}")
            where = f"{self.name} {split} row {i} (pid {sample_id})"
            if row.get("answer") is None:
                raise ValueError(f"{where}: no answer (MathVista's test split is unlabeled; evaluate testmini)")
            question_type = str(loading.field(row, ("question_type",), where))
            choices = [str(c) for c in (row.get("choices") or [])]
            if question_type == "multi_choice" and not choices:
                raise ValueError(f"{where}: a multi_choice question without choices")
            source = row.get("decoded_image") if row.get("decoded_image") is not None else row.get("image")
            image = image_records.record_image(source, folders, where)
            if image is None:
                raise ValueError(f"{where}: no image (fields decoded_image / image are empty)")
            meta = {
                "question_type": question_type,
                "answer_type": str(loading.field(row, ("answer_type",), where)),
                "choices": choices,
                "precision": row.get("precision"),
                "unit": row.get("unit") or "",
            }
            prompt = f"{IMAGE_TEXT}\n{build_query(row, where)}{THINK_SUFFIX}"
            samples.append(Sample(id=sample_id, prompt=prompt, reference=str(row["answer"]), meta=meta, images=(image,)))
        return samples

    def score(self, sample: Sample, output: str) -> Score:
        meta = sample.meta
        response = clean_reply(output)
        extraction = official_quick_extract(response, meta["question_type"], meta["answer_type"], meta["choices"])
        how = "direct"
        if extraction is None:
            extraction, how = rule_extract(response, meta["question_type"], meta["answer_type"], meta["choices"]), "rule"
        prediction = normalize_extraction(extraction, meta["choices"], meta["question_type"], meta["answer_type"], meta["precision"])
        correct = str(prediction).strip() == str(sample.reference).strip()
        return Score(extracted=prediction, correct=correct, detail=f"{how} extraction {extraction!r}")
