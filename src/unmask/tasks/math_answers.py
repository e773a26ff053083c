"""MATH answers: extraction from Minerva-style solutions and equivalence of two LaTeX answers.

Extraction prefers the Minerva closing sentence ("Final Answer: The final answer is X. I hope
it is correct."), then the last `\\boxed{...}` (braces balanced, so `\\boxed{\\frac{1}{2}}`
works). Equivalence asks the `math-verify` package (parse both, verify: 1/2 = 0.5 = \\dfrac12,
(3,-2) = (3, -2), x^2+1 = 1+x^2), after a cheap string comparison of normalized forms that also
serves as the fallback when math-verify cannot parse an answer.
"""

from __future__ import annotations

import re
import threading

from . import answers

_FINAL = re.compile(r"final answer is", re.IGNORECASE)
_HOPE = re.compile(r"\.?\s*I hope it is correct", re.IGNORECASE)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*")
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;: ]|\\quad|\\qquad|\\left|\\right|\\displaystyle")
_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:,\d{3})+(?![\d])")
_SHORT_FRAC = re.compile(r"\\frac(\d)(\d)")
_SHORT_SQRT = re.compile(r"\\sqrt(\d)")
_VAR_EQ = re.compile(r"^[a-zA-Z]\s*=\s*(?!.*=)")


def braced(text: str, start: int) -> str | None:
    """The content of the `{...}` group opening at `text[start]`, nested braces included."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif text[i] == "}" and text[i - 1] != "\\":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None  # unbalanced (truncated output)


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`) in `text`."""
    matches = list(_BOX.finditer(text))
    for m in reversed(matches):
        inner = braced(text, m.end())
        if inner is not None:
            return inner.strip()
        bare = re.match(r"[^\s$]+", text[m.end() :])
        if bare and not bare.group(0).startswith("{"):
            return bare.group(0)
    return None


def _strip_math(s: str) -> str:
    s = s.strip()
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    if s.startswith("\\(") and s.endswith("\\)") or s.startswith("\\[") and s.endswith("\\]"):
        s = s[2:-2].strip()
    return s.rstrip(".").strip()


def extract_final(text: str) -> str | None:
    """X in the last "final answer is X[. I hope it is correct.]" (None when absent or empty)."""
    matches = list(_FINAL.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    hope = _HOPE.search(rest)
    rest = rest[: hope.start()] if hope else rest.split("\n", 1)[0]
    if _BOX.search(rest):
        boxed = last_boxed(rest)
        if boxed is not None:
            return boxed
    answer = _strip_math(rest.strip().rstrip(".:"))
    return answer or None


def extract_answer(text: str) -> str | None:
    """The model's final answer: the Minerva sentence first, then the last boxed expression."""
    final = extract_final(text)
    if final is not None:
        return final
    return last_boxed(text)


def reference_answer(answer: str | None, solution: str | None) -> str:
    """The gold answer: the given `answer` field, else the last boxed expression of the solution."""
    if answer is not None and str(answer).strip():
        return str(answer).strip()
    boxed = last_boxed(solution or "")
    if boxed is None:
        raise ValueError("a MATH row needs an 'answer' field or a solution with \\boxed{...}")
    return boxed


def normalize(answer: str) -> str:
    """A canonical spelling for string comparison: no $, spacing commands, \\text wrappers, units
    of degrees/percent, thousands commas or trailing zeros; `\\dfrac12` -> `\\frac{1}{2}`."""
    s = _strip_math(answer)
    s = _TEXT.sub(r"\1", s)
    s = _SPACING.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SHORT_FRAC.sub(r"\\frac{\1}{\2}", s)
    s = _SHORT_SQRT.sub(r"\\sqrt{\1}", s)
    for unit in ("^\\circ", "^{\\circ}", "\\%", "%", "\\$", "$"):
        s = s.replace(unit, "")
    s = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), s)
    s = _VAR_EQ.sub("", s)
    s = s.replace(" ", "").rstrip(".")
    return answers.canonical_decimal(s) or s


def _math_verify_equal(pred: str, gold: str) -> bool:
    from math_verify import parse, verify

    # math-verify's timeouts use signal.alarm, which only works in the main thread.
    limit = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse(f"${gold}$", parsing_timeout=limit)
        pred_parsed = parse(f"${pred}$", parsing_timeout=limit)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=limit))
    except Exception:  # a parser failure on odd LaTeX means "not shown equal"
        return False


def equivalent(pred: str | None, gold: str) -> bool:
    """Whether the extracted answer equals the gold one (normalized strings, else math-verify)."""
    if pred is None or not pred.strip():
        return False
    if normalize(pred) == normalize(gold):
        return True
    return _math_verify_equal(pred, gold)
