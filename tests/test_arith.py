"""The arithmetic task: determinism, correct worked solutions, a clean eval split, answer checking."""

from __future__ import annotations

import random
import re

import pytest

from unmask.tasks import arith
from unmask.tasks.answers import extract_flexible, extract_strict, is_correct, normalize_number

EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def test_generator_is_deterministic_for_a_seed():
    a = [arith.make_problem(random.Random(7)) for _ in range(3)]
    b = [arith.make_problem(random.Random(7)) for _ in range(3)]
    assert a == b
    s1, s2 = arith.problem_stream(3), arith.problem_stream(3)
    assert [next(s1) for _ in range(20)] == [next(s2) for _ in range(20)]
    assert next(arith.problem_stream(4)) != next(arith.problem_stream(3))


def test_every_equation_recomputes():
    rng = random.Random(0)
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}
    for _ in range(2000):
        p = arith.make_problem(rng)
        assert set(p) == {"id", "question", "answer"}
        *lines, final = p["answer"].split("\n")
        assert arith.MIN_STEPS <= len(lines) <= arith.MAX_STEPS
        known = {int(x) for x in re.findall(r"\d+", p["question"])} | {2, 3}  # "doubles", "half", "triples"
        result = None
        for line in lines:
            eqs = EQUATION.findall(line)
            assert len(eqs) == 1, line
            a, op, b, r = eqs[0]
            a, b, r = int(a), int(b), int(r)
            if op == "/":
                assert b and a % b == 0, line
            assert ops[op](a, b) == r, line
            assert 0 < r <= arith.MAX_VALUE and a <= arith.MAX_VALUE
            assert a in known and b in known, (line, p["question"])  # operands are copied, not invented
            known.add(r)
            result = r
        assert final == f"#### {result}"
        assert extract_strict(p["answer"]) == str(result)


def test_stream_state_resumes_exactly():
    s = arith.ProblemStream(11)
    [next(s) for _ in range(5)]
    saved = s.state()
    after = [next(s) for _ in range(5)]
    t = arith.ProblemStream(0)
    t.load_state(saved)
    assert [next(t) for _ in range(5)] == after and t.count == 10


def test_stream_skips_excluded_questions():
    first = arith.make_problem(random.Random(5))
    s = arith.ProblemStream(5, exclude={first["question"]})
    assert next(s)["question"] != first["question"]


def test_shipped_eval_split_is_what_the_seed_generates(tmp_path):
    split = arith.eval_split()
    assert len(split) == arith.EVAL_SIZE
    assert len({p["question"] for p in split}) == len(split)
    assert [p["id"] for p in split[:2]] == ["eval-0000", "eval-0001"]
    regenerated = arith.eval_split(arith.write_eval_split(tmp_path / "e.jsonl", n=50))
    assert regenerated == split[:50]


def test_eval_problems_never_appear_in_training_streams():
    questions = {p["question"] for p in arith.eval_split()}
    for seed in (0, 1, arith.EVAL_SEED):
        stream = arith.problem_stream(seed)
        assert not any(next(stream)["question"] in questions for _ in range(2000))


@pytest.mark.parametrize(
    "text, strict, flexible",
    [
        ("so 3 * 4 = 12.\n#### 12", "12", "12"),
        ("#### 1,234", "1,234", "1,234"),
        ("The total is $1,200.50.", None, "$1,200.50"),
        ("#### -3", "-3", "-3"),
        ("it drops to -$4 today", None, "-$4"),
        ("10 - 5 = 5", None, "5"),  # a minus between numbers is not a sign
        ("#### 7\nthen 8", "7", "8"),
        ("no number here", None, None),
        ("", None, None),
    ],
)
def test_extraction(text, strict, flexible):
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


@pytest.mark.parametrize(
    "raw, norm",
    [("1,234", "1234"), ("$5", "5"), ("12.0", "12"), ("12.50", "12.5"), ("7.", "7"), ("-3", "-3"), ("-0", "0"),
     ("+4", "4"), ("-$4", "-4"), ("abc", None)],
)
def test_normalize_number(raw, norm):
    assert normalize_number(raw) == norm


def test_is_correct():
    gold = "Mia has 3 * 4 = 12.\n#### 12"
    assert is_correct("Mia has 3 * 4 = 12.\n#### 12", gold)
    assert is_correct("#### 12.0", gold)
    assert is_correct("#### $12", "12")
    assert is_correct("the answer is 12", gold)  # no '####': flexible fallback
    assert not is_correct("#### 13\n12", gold)  # strict answer wins over a later number
    assert not is_correct("no idea", gold)
    assert not is_correct("#### 12", "no number")
    assert is_correct("#### -5", "#### -5") and not is_correct("#### 5", "#### -5")


def _built_tokenizer(tmp_path, texts: list[str], **kwargs):
    from tokenizers import Tokenizer

    from unmask.models.families import LLADA_CHAT
    from unmask.tasks.tokenizer_build import build_tokenizer

    return Tokenizer.from_file(str(build_tokenizer(tmp_path, texts + [" ".join(arith.lexicon()), LLADA_CHAT], **kwargs)))


def _number_tokens(tok, text: str) -> list[str]:
    return [t for t in tok.encode(text, add_special_tokens=False).tokens if t.strip().isdigit()]


def test_tokenizer_round_trips_problems_with_whole_number_tokens(tmp_path):
    from unmask.models.families import LLADA_CHAT
    from unmask.tasks.tokenizer_build import SPECIAL_TOKENS

    rng = random.Random(3)
    problems = [arith.make_problem(rng) for _ in range(300)]
    texts = [p["question"] + "\n" + p["answer"] for p in problems]
    tok = _built_tokenizer(tmp_path, texts[:200])
    assert tok.get_vocab_size() < 1600  # specials, ASCII, 990 numbers and the task's words
    for text in texts[200:] + ["Zed has 1,234 odd  words\tand é!", "007 and 123456789"]:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False).replace(
            "<|unk|>", "é") == text
    enc = tok.encode("Mia has 305 apples.", add_special_tokens=False)
    assert _number_tokens(tok, "Mia has 305 apples.") == ["305"]
    assert enc.tokens[0] == "Mia" and " apples" in enc.tokens  # whole words are single tokens
    # every number an equation can hold is one token, so `a op b = r` always spans 5 tokens
    for a, b in ((7, 5), (25, 97), (999, 0), (100, 10)):
        assert len(tok.encode(f"{a} + {b} = {a + b}", add_special_tokens=False).ids) == (5 if a + b < 1000 else 6)
    assert _number_tokens(tok, "1234567") == ["123", "456", "7"]  # longer runs: groups of three
    prompt = LLADA_CHAT.format(content=problems[0]["question"])
    ids = tok.encode(prompt, add_special_tokens=False).ids
    for special in SPECIAL_TOKENS[1:2] + SPECIAL_TOKENS[3:]:
        assert tok.token_to_id(special) in ids
    assert tok.decode(ids, skip_special_tokens=False) == prompt


def test_tokenizer_can_split_digits(tmp_path):
    rng = random.Random(4)
    texts = [p["question"] + "\n" + p["answer"] for p in (arith.make_problem(rng) for _ in range(100))]
    tok = _built_tokenizer(tmp_path, texts, whole_numbers=False)
    assert tok.get_vocab_size() < 600
    assert _number_tokens(tok, "Mia has 305 apples.") == ["3", "0", "5"]
    assert tok.decode(tok.encode(texts[0], add_special_tokens=False).ids) == texts[0]


def _mixed_stream(seed: int, n: int, prompt: str, **fractions) -> tuple[list[dict], list[dict]]:
    """n problems of a mixed stream (checked equal for two streams of one seed) and its mix-ins."""
    s1, s2 = arith.ProblemStream(seed, **fractions), arith.ProblemStream(seed, **fractions)
    a = [next(s1) for _ in range(n)]
    assert a == [next(s2) for _ in range(n)]
    return a, [p for p in a if p["question"].startswith(prompt)]


def test_copy_mix_in_is_deterministic():
    _, copies = _mixed_stream(2, 40, arith.COPY_PROMPT, copy_fraction=0.5)
    assert 5 < len(copies) < 35
    assert all(p["question"].endswith(p["answer"]) for p in copies)


def test_drill_mix_in_holds_the_solution_equations_correctly_computed():
    _, drills = _mixed_stream(3, 60, arith.DRILL_PROMPT, drill_fraction=0.5)
    assert 10 < len(drills) < 50
    ops = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": lambda x, y: x / y}
    for p in drills:
        lines = p["question"].splitlines()[1:]
        equations = arith.EQUATION.findall(p["answer"])
        assert [f"{x} {op} {y}" for x, op, y, _ in equations] == lines and len(lines) >= 2
        assert all(ops[op](int(x), int(y)) == int(r) for x, op, y, r in equations)
        assert p["answer"].endswith(f"#### {equations[-1][3]}")


def test_mix_in_fractions_are_checked():
    with pytest.raises(ValueError, match="drill_fraction"):
        arith.ProblemStream(0, copy_fraction=0.6, drill_fraction=0.6)
    with pytest.raises(ValueError, match="drill_fraction"):
        arith.ProblemStream(0, drill_fraction=-0.1)
