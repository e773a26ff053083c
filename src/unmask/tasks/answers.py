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


def normalize_number(s: str) -> str | None:
    """Canonical text of a number: no `$`, commas or trailing `.`; `12.0` -> `12`, `-0` -> `0`."""
    text = s.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    if text.startswith("+"):
        text = text[1:]
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


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


def is_correct(output: str, reference_answer_text: str) -> bool:
    """Strict match on `#### n`; only an output without any `####` number is read flexibly."""
    gold = reference_number(reference_answer_text)
    if gold is None:
        return False
    raw = extract_strict(output)
    if raw is None:
        raw = extract_flexible(output)
    return raw is not None and normalize_number(raw) == gold
