"""Small text helpers the few-shot tasks share."""

from __future__ import annotations


def cut_at_stops(text: str, stops: list[str]) -> str:
    """`text` up to the earliest stop string (a model that goes on to the next few-shot item)."""
    end = len(text)
    for stop in stops:
        if stop:
            i = text.find(stop)
            if 0 <= i < end:
                end = i
    return text[:end]


def check_n_shot(task: str, n_shot: int, available: int) -> None:
    """Refuse more few-shot examples than the task's fixed pool holds (no silent truncation)."""
    if n_shot > available:
        raise ValueError(f"{task}: dataset.n_shot={n_shot} but only {available} few-shot examples exist (use 0..{available})")
