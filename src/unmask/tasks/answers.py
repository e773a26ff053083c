"""GSM8K-style answer extraction and comparison (shared by the arithmetic task and GSM8K).

Two extractions as in lm-evaluation-harness: *strict* takes the number after `####`, *flexible*
the last number anywhere. `is_correct` uses strict and falls back to flexible only when the
output has no `####` number at all, so a model that writes `#### 7` is judged on that 7 even if
a different number follows it.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# An optional sign and dollar sign, then digits with optional thousands commas and decimals.
NUMBER = r"[-+]?\$?\d[\d,]*(?:\.\d+)?"
_NUMBER = re.compile(r"(?<![\w.])" + NUMBER)
_STRICT = re.compile(r"####\s*(" + NUMBER + ")")


def canonical_decimal(text: str) -> str | None:
    """`12.0` -> `12`, `-0` -> `0`, `1.50` -> `1.5`; None when `text` is not a finite decimal."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def normalize_number(s: str) -> str | None:
    """Canonical text of a number: no `$`, commas, spaces, `+` or trailing `.` (see canonical_decimal)."""
    text = s.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    return canonical_decimal(text[1:] if text.startswith("+") else text)


def extract_strict(text: str) -> str | None:
    """The number right after the first `####`, as written (None when there is none)."""
    m = _STRICT.search(text)
    return m.group(1).strip() if m else None


def extract_flexible(text: str) -> str | None:
    """The last number anywhere in the text, as written (None when there is none)."""
    found = _NUMBER.findall(text)
    return found[-1].strip() if found else None


def reference_number(reference: str) -> str | None:
    """The gold number: after `####` in a worked solution, else the reference's last number."""
    raw = extract_strict(reference) or extract_flexible(reference)
    return normalize_number(raw) if raw is not None else None


def extract_answer(output: str) -> str | None:
    """The output's answer, normalized: the `#### n` number, or the last number when there is none."""
    raw = extract_strict(output)
    if raw is None:
        raw = extract_flexible(output)
    return normalize_number(raw) if raw is not None else None


def answer_matches(extracted: str | None, reference_answer_text: str) -> bool:
    """An extracted answer against the reference's gold number (never equal when either is missing)."""
    gold = reference_number(reference_answer_text)
    return gold is not None and extracted == gold


def is_correct(output: str, reference_answer_text: str) -> bool:
    """Strict match on `#### n`; only an output without any `####` number is read flexibly."""
    return answer_matches(extract_answer(output), reference_answer_text)
