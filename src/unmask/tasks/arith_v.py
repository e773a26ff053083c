"""`arith-v`: arithmetic word problems whose key quantity is only in a picture.

Each problem shows k objects (arith_v_render) and a question that computes with k without
stating it ("Mia has the bags in the picture. Each bag has 5 apples. How many apples ..."). The
worked answer follows the bundled `arith` task's format (`clause: a op b = r.` lines, then
`#### n`), so the shipped `tiny` language model already knows how to finish once it has read k.
k takes each value of COUNTS equally often in the evaluation split, so a model that ignores the
picture and always answers with the same k scores at most 1 / len(COUNTS): the chance level.

The evaluation split is generated at load time from EVAL_SEED (no stored images); the training
stream never yields a problem whose question and count are both in that split.
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable, Iterator

from . import arith
from .arith_v_render import PictureSpec, random_spec

EVAL_SEED = 20261126
EVAL_SIZE = 200
COUNTS = tuple(range(2, 10))  # objects in a picture
CHANCE = 1 / len(COUNTS)
MAX_VALUE = arith.MAX_VALUE


def _person(rng: random.Random) -> tuple[tuple[str, str, str], str]:
    """The subject (name, pronoun, possessive) and a friend's name."""
    subject, friend = rng.sample(arith.NAMES, 2)
    return subject, friend[0]


def _group(rng: random.Random, k: int) -> tuple[str, list[str], int, str]:
    (name, _, _), _ = _person(rng)
    (box, boxes), (_, items) = rng.choice(arith.BOXES), rng.choice(arith.ITEMS)
    n = rng.randint(2, 20)
    q = f"{name} has the {boxes} in the picture. Each {box} has {n} {items}. How many {items} does {name} have?"
    return q, [f"{name} has {k} {boxes} of {n}: {arith.equation(k, '*', n, k * n)}."], k * n, "square"


def _add(rng: random.Random, k: int) -> tuple[str, list[str], int, str]:
    (name, pron, _), _ = _person(rng)
    items = rng.choice(arith.ITEMS)[1]
    a = rng.randint(5, 99)
    q = f"{name} has {a} {items}. {pron} finds the {items} in the picture. How many {items} does {name} have now?"
    return q, [f"{name} finds {k} more: {arith.equation(a, '+', k, a + k)}."], a + k, "circle"


def _sub(rng: random.Random, k: int) -> tuple[str, list[str], int, str]:
    (name, pron, _), friend = _person(rng)
    items = rng.choice(arith.ITEMS)[1]
    a = rng.randint(12, 99)
    q = (f"{name} has {a} {items}. {pron} gives the {items} in the picture to {friend}. "
         f"How many {items} does {name} have left?")
    return q, [f"{name} gives {k} to {friend}: {arith.equation(a, '-', k, a - k)}."], a - k, "circle"


def _sell(rng: random.Random, k: int) -> tuple[str, list[str], int, str]:
    (name, _, _), _ = _person(rng)
    items = rng.choice(arith.ITEMS)[1]
    n = rng.randint(2, 20)
    q = f"{name} sells the {items} in the picture for {n} dollars each. How many dollars does {name} make?"
    return q, [f"{name} sells {k} for {n} dollars each: {arith.equation(k, '*', n, k * n)}."], k * n, "circle"


def _group_add(rng: random.Random, k: int) -> tuple[str, list[str], int, str]:
    (name, pron, _), _ = _person(rng)
    (box, boxes), (_, items) = rng.choice(arith.BOXES), rng.choice(arith.ITEMS)
    n = rng.randint(2, 20)
    p = k * n
    a = rng.randint(5, min(99, MAX_VALUE - p))
    q = (f"{name} has {a} {items}. {pron} buys the {boxes} in the picture. Each {box} has {n} {items}. "
         f"How many {items} does {name} have now?")
    lines = [f"{name} buys {k} {boxes} of {n}: {arith.equation(k, '*', n, p)}.",
             f"{name} adds them: {arith.equation(a, '+', p, a + p)}."]
    return q, lines, a + p, "square"


def _count(rng: random.Random, k: int) -> tuple[str, list[str], int, str]:
    """The picture alone: nothing to compute, the answer is k (what `unmask generate` shows off)."""
    items = rng.choice(arith.ITEMS)[1]
    tail = rng.choice(("are there now", "are in the picture"))
    return f"How many {items} {tail}?", [], k, "circle"


TEMPLATES: tuple[Callable[[random.Random, int], tuple[str, list[str], int, str]], ...] = (
    _group, _add, _sub, _sell, _group_add, _count,
)


def problem_key(question: str, count: int) -> str:
    """What makes two problems the same for the train/eval separation: the text and the answer's k."""
    return f"{count}|{question}"


def make_problem(rng: random.Random, count: int | None = None) -> dict:
    """One problem: `{"id", "question", "answer", "count", "picture"}` (picture: a PictureSpec as JSON).

    `count` fixes k (the evaluation split balances it); otherwise k is uniform over COUNTS.
    """
    k = rng.choice(COUNTS) if count is None else count
    if k not in COUNTS:
        raise ValueError(f"count={k}: arith-v pictures show one of {COUNTS} objects")
    template = rng.choice(TEMPLATES)
    question, lines, result, shape = template(rng, k)
    spec = random_spec(rng, k, shape)
    digest = hashlib.sha1(f"{problem_key(question, k)}|{spec.to_json()}".encode()).hexdigest()[:12]
    return {"id": f"arith-v-{digest}", "question": question, "answer": "\n".join(lines + [f"#### {result}"]),
            "count": k, "picture": spec.to_json()}


def eval_split(seed: int = EVAL_SEED, n: int = EVAL_SIZE) -> list[dict]:
    """The fixed evaluation problems: `n` distinct ones, k cycling through COUNTS (ids eval-000, ...)."""
    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < n:
        p = make_problem(rng, count=COUNTS[len(rows) % len(COUNTS)])
        key = problem_key(p["question"], p["count"])
        if key in seen:
            continue
        seen.add(key)
        rows.append({**p, "id": f"eval-{len(rows):03d}"})
    return rows


def eval_keys() -> set[str]:
    return {problem_key(p["question"], p["count"]) for p in eval_split()}


def picture(problem: dict) -> PictureSpec:
    return PictureSpec.from_json(problem["picture"])


class ProblemStream(arith.SeededStream):
    """Infinite, seeded training problems that skip the evaluation split; its state can be saved."""

    def __init__(self, seed: int, exclude: set[str] | None = None):
        self.rng = random.Random(seed)
        self.seed = seed
        self.count = 0
        self.exclude = eval_keys() if exclude is None else exclude

    def __iter__(self) -> "ProblemStream":
        return self

    def __next__(self) -> dict:
        while True:
            p = make_problem(self.rng)
            if problem_key(p["question"], p["count"]) not in self.exclude:
                self.count += 1
                return p


def problem_stream(seed: int) -> Iterator[dict]:
    """Infinite training problems for `seed`; never one whose question and count are in the eval split."""
    return ProblemStream(seed)
