"""Synthetic arithmetic word problems shaped like GSM8K, to train and evaluate the bundled model.

The problems are built so that a tiny model can learn them on a CPU in a few hours: operands
are mostly 2..20 (some up to 50, and a starting amount up to 99), no value exceeds 200, products
have one factor under 10, division is always exact, and each solution line restates one question
sentence and then writes its equation out (`clause: a op b = r.`). Every number in an answer is
therefore either copied (from the question or an earlier line) or computed from the two operands
just before it.
Names, items, containers, phrasings and 2..6 chained steps still make the question worth reading.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import loading

EVAL_SEED = 20250101
EVAL_SIZE = 1000
EVAL_FILE = Path(__file__).resolve().parent / "data" / "arith_eval.jsonl"
MAX_VALUE = 200  # every value in a problem stays at or below this
MAX_FACTOR = 20  # the larger factor of a product; the smaller one is 2..9
MIN_STEPS, MAX_STEPS = 2, 6

NAMES = (
    ("Mia", "She", "her"), ("Leo", "He", "his"), ("Ava", "She", "her"), ("Sam", "He", "his"),
    ("Emma", "She", "her"), ("Noah", "He", "his"), ("Lily", "She", "her"), ("Ben", "He", "his"),
    ("Zoe", "She", "her"), ("Max", "He", "his"), ("Nora", "She", "her"), ("Jack", "He", "his"),
    ("Ella", "She", "her"), ("Owen", "He", "his"), ("Ruby", "She", "her"), ("Luke", "He", "his"),
    ("Grace", "She", "her"), ("Tom", "He", "his"), ("Anna", "She", "her"), ("Eli", "He", "his"),
    ("Ivy", "She", "her"), ("Finn", "He", "his"), ("Rosa", "She", "her"), ("Omar", "He", "his"),
    ("Sofia", "She", "her"), ("Ravi", "He", "his"), ("Chloe", "She", "her"), ("Hugo", "He", "his"),
)
ITEMS = (
    ("apple", "apples"), ("pencil", "pencils"), ("sticker", "stickers"), ("marble", "marbles"),
    ("cookie", "cookies"), ("book", "books"), ("card", "cards"), ("shell", "shells"),
    ("coin", "coins"), ("stamp", "stamps"), ("egg", "eggs"), ("flower", "flowers"),
    ("candy", "candies"), ("rock", "rocks"), ("bead", "beads"), ("balloon", "balloons"),
    ("cupcake", "cupcakes"), ("orange", "oranges"), ("crayon", "crayons"), ("button", "buttons"),
    ("ribbon", "ribbons"), ("muffin", "muffins"), ("lemon", "lemons"), ("peach", "peaches"),
)
BOXES = (
    ("bag", "bags"), ("box", "boxes"), ("pack", "packs"), ("jar", "jars"), ("basket", "baskets"),
    ("crate", "crates"), ("tray", "trays"), ("tin", "tins"), ("bucket", "buckets"),
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def small(rng: random.Random, lo: int = 2) -> int:
    """An operand: usually lo..20, sometimes 21..50."""
    return rng.randint(lo, 20) if rng.random() < 0.8 else rng.randint(21, 50)


def equation(a: int, op: str, b: int, r: int) -> str:
    return f"{a} {op} {b} = {r}"


@dataclass
class Story:
    """A problem under construction: whose items we count, their value, and the text so far."""

    rng: random.Random
    item: tuple[str, str]
    box: tuple[str, str]
    people: list[tuple[str, str, str]]  # (name, subject pronoun, possessive); people[0] starts
    value: int = 0
    subject: int = 0
    steps: int = 0
    pronoun_ok: bool = False  # the previous sentence named only the current subject
    sentences: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.people[self.subject][0]

    @property
    def poss(self) -> str:
        return self.people[self.subject][2]

    def who(self) -> str:
        """The subject at the start of a sentence: a pronoun when that cannot be ambiguous."""
        if self.pronoun_ok and self.rng.random() < 0.5:
            return self.people[self.subject][1]
        return self.name

    def friend(self) -> int:
        """Index of a person other than the subject (one of up to two friends)."""
        others = [i for i in range(len(self.people)) if i != self.subject]
        return self.rng.choice(others)

    def say(self, sentence: str, alone: bool = True) -> None:
        self.sentences.append(sentence)
        self.pronoun_ok = alone

    def step(self, clause: str, a: int, op: str, b: int, r: int) -> None:
        self.lines.append(f"{clause}: {equation(a, op, b, r)}.")
        self.steps += 1

    def items(self) -> str:
        return self.item[1]


def can_mul(a: int, b: int) -> bool:
    lo, hi = min(a, b), max(a, b)
    return 2 <= lo <= 9 and hi <= MAX_FACTOR and a * b <= MAX_VALUE


def divisors(v: int, top: int = 9) -> list[int]:
    """Divisors k in 2..top that leave a quotient a product could have made."""
    return [k for k in range(2, top + 1) if v % k == 0 and 2 <= v // k <= MAX_FACTOR]


# -- openings: set the first value (0 or 1 equations) --------------------------------------


def open_has(s: Story) -> None:
    s.value = s.rng.randint(5, 20) if s.rng.random() < 0.6 else s.rng.randint(21, 99)
    verb = s.rng.choice(("has", "owns", "starts with", "keeps"))
    s.say(f"{s.name} {verb} {s.value} {s.items()}.")


def open_group(s: Story) -> None:
    g, n = s.rng.randint(2, 9), s.rng.randint(2, 20)
    (box, boxes), (_, items) = s.box, s.item
    s.value = g * n
    if s.rng.random() < 0.5:
        s.say(f"{s.name} buys {g} {boxes} of {items}. Each {box} has {n} {items}.")
    else:
        s.say(f"{s.name} has {g} {boxes} with {n} {items} in each {box}.")
    s.step(f"{s.name} has {g} {boxes} of {n}", g, "*", n, s.value)


def open_two(s: Story) -> None:
    a, b = small(s.rng), small(s.rng)
    d1, d2 = s.rng.sample(DAYS, 2)
    verb = s.rng.choice(("collects", "buys", "finds", "gets"))
    s.value = a + b
    s.say(f"{s.name} {verb} {a} {s.items()} on {d1} and {b} {s.items()} on {d2}.")
    s.step(f"{s.name} {verb} {a} and {b}", a, "+", b, s.value)


OPENINGS: tuple[tuple[int, Callable[[Story], None]], ...] = ((0, open_has), (1, open_group), (1, open_two))


# -- middle steps: change the value (1 or 2 equations); each returns False when infeasible --


def op_add(s: Story) -> bool:
    n = small(s.rng)
    if s.value + n > MAX_VALUE:
        return False
    v, r, items = s.value, s.value + n, s.items()
    kind = s.rng.randrange(4)
    if kind == 0:
        s.say(f"{s.who()} buys {n} more {items}.")
        s.step(f"{s.name} buys {n} more", v, "+", n, r)
    elif kind == 1:
        s.say(f"{s.who()} finds {n} more {items}.")
        s.step(f"{s.name} finds {n} more", v, "+", n, r)
    elif kind == 2:
        f = s.people[s.friend()][0]
        s.say(f"{f} gives {s.name} {n} {items}.", alone=False)
        s.step(f"{f} gives {s.name} {n}", v, "+", n, r)
    else:
        f = s.people[s.friend()][0]
        s.say(f"{s.who()} gets {n} {items} from {f}.", alone=False)
        s.step(f"{s.name} gets {n} from {f}", v, "+", n, r)
    s.value = r
    return True


def op_sub(s: Story) -> bool:
    if s.value < 5:
        return False
    n = small(s.rng)
    if n > s.value - 2:
        n = s.rng.randint(2, min(20, s.value - 2))
    v, r, items = s.value, s.value - n, s.items()
    kind = s.rng.randrange(4)
    if kind == 0:
        f = s.people[s.friend()][0]
        s.say(f"{s.who()} gives {n} {items} to {f}.", alone=False)
        s.step(f"{s.name} gives {n} to {f}", v, "-", n, r)
    elif kind == 1:
        s.say(f"{s.who()} loses {n} {items}.")
        s.step(f"{s.name} loses {n}", v, "-", n, r)
    elif kind == 2:
        s.say(f"{s.who()} sells {n} of the {items}.")
        s.step(f"{s.name} sells {n}", v, "-", n, r)
    else:
        s.say(f"{s.who()} uses {n} {items} for a project.")
        s.step(f"{s.name} uses {n}", v, "-", n, r)
    s.value = r
    return True


def op_group_add(s: Story) -> bool:
    g, n = s.rng.randint(2, 9), s.rng.randint(2, 20)
    if s.value + g * n > MAX_VALUE:
        return False
    (box, boxes), items, p = s.box, s.items(), g * n
    s.say(f"{s.who()} buys {g} more {boxes} with {n} {items} in each {box}.")
    s.step(f"{s.name} buys {g} {boxes} of {n}", g, "*", n, p)
    s.step(f"{s.name} adds them", s.value, "+", p, s.value + p)
    s.value += p
    return True


def op_group_sub(s: Story) -> bool:
    g, n = s.rng.randint(2, 9), s.rng.randint(2, 20)
    if g * n > s.value - 2:
        return False
    p = g * n
    s.say(f"{s.who()} gives {g} friends {n} {s.items()} each.")
    s.step(f"{s.name} gives {g} friends {n} each", g, "*", n, p)
    s.step(f"{s.name} has left", s.value, "-", p, s.value - p)
    s.value -= p
    return True


def op_scale(s: Story) -> bool:
    k = s.rng.choice((2, 2, 3, 4, 5))
    if not can_mul(s.value, k):
        return False
    v, r, items = s.value, s.value * k, s.items()
    words = {2: "doubles", 3: "triples"}
    if k in words and s.rng.random() < 0.5:
        who = s.who()
        who = who.lower() if who in ("She", "He") else who
        s.say(f"Then {who} {words[k]} {s.poss} {items}.")
        s.step(f"{s.name} {words[k]} them", v, "*", k, r)
    else:
        s.say(f"{s.who()} ends up with {k} times as many {items}.")
        s.step(f"{k} times as many", v, "*", k, r)
    s.value = r
    return True


def op_compare(s: Story) -> bool:
    """Another person's count, relative to the subject's; that person becomes the subject."""
    f = s.friend()
    fname, v, items = s.people[f][0], s.value, s.items()
    kind = s.rng.randrange(4)
    if kind == 0:
        k = s.rng.randint(2, 5)
        if not can_mul(v, k):
            return False
        r, line = v * k, (f"{fname} has {k} times as many", v, "*", k, v * k)
        s.say(f"{fname} has {k} times as many {items} as {s.name}.", alone=False)
    elif kind == 1:
        n = small(s.rng)
        if v + n > MAX_VALUE:
            return False
        r, line = v + n, (f"{fname} has {n} more", v, "+", n, v + n)
        s.say(f"{fname} has {n} more {items} than {s.name}.", alone=False)
    elif kind == 2:
        n = small(s.rng)
        if n > v - 2:
            return False
        r, line = v - n, (f"{fname} has {n} fewer", v, "-", n, v - n)
        s.say(f"{fname} has {n} fewer {items} than {s.name}.", alone=False)
    else:
        if 2 not in divisors(v):
            return False
        r, line = v // 2, (f"{fname} has half as many", v, "/", 2, v // 2)
        s.say(f"{fname} has half as many {items} as {s.name}.", alone=False)
    s.subject = f
    s.step(*line)
    s.value = r
    return True


def op_split(s: Story) -> bool:
    ks = divisors(s.value)
    if not ks:
        return False
    k = s.rng.choice(ks)
    v, r, (box, boxes), items = s.value, s.value // k, s.box, s.items()
    if s.rng.random() < 0.5:
        s.say(f"{s.who()} splits the {items} into {k} equal piles and keeps one pile.")
        s.step(f"{s.name} keeps one of {k} piles", v, "/", k, r)
    else:
        s.say(f"{s.who()} packs the {items} equally into {k} {boxes} and keeps one {box}.")
        s.step(f"{s.name} keeps one of {k} {boxes}", v, "/", k, r)
    s.value = r
    return True


MIDDLE: tuple[tuple[int, int, Callable[[Story], bool]], ...] = (
    # (equations, weight, op)
    (1, 4, op_add), (1, 4, op_sub), (2, 2, op_group_add), (2, 2, op_group_sub),
    (1, 2, op_scale), (1, 3, op_compare), (1, 2, op_split),
)

# -- endings: ask the question (0 or 1 equations); each returns False when infeasible -------


def end_count(s: Story) -> bool:
    tail = s.rng.choice(("now", "in the end", "at the end", "left"))
    s.say(f"How many {s.items()} does {s.name} have {tail}?")
    return True


def end_sell(s: Story) -> bool:
    n = s.rng.randint(2, 9)
    if not can_mul(s.value, n):
        return False
    r = s.value * n
    s.say(f"{s.who()} sells all the {s.items()} for {n} dollars each. How many dollars does {s.name} make?")
    s.step(f"{s.name} sells {s.value} for {n} dollars each", s.value, "*", n, r)
    s.value = r
    return True


def end_share(s: Story) -> bool:
    ks = divisors(s.value)
    if not ks:
        return False
    k = s.rng.choice(ks)
    (box, boxes), items, r = s.box, s.items(), s.value // k
    s.say(f"{s.who()} puts the {items} equally into {k} {boxes}. How many {items} are in each {box}?")
    s.step(f"Each of {k} {boxes} gets", s.value, "/", k, r)
    s.value = r
    return True


def end_need(s: Story) -> bool:
    n = small(s.rng)
    target = s.value + n
    if target > MAX_VALUE:
        return False
    s.say(f"How many more {s.items()} does {s.name} need to have {target} {s.items()}?")
    s.step(f"{s.name} needs", target, "-", s.value, n)
    s.value = n
    return True


END_WITH_STEP: tuple[Callable[[Story], bool], ...] = (end_sell, end_share, end_need)
P_END_COUNT = 0.4  # share of problems whose last sentence only asks (no equation)


def _end(s: Story) -> None:
    """Ask with an equation (selling, sharing or how many more) if `s` kept room for one."""
    choices = list(END_WITH_STEP)
    s.rng.shuffle(choices)
    for end in choices:
        if end(s):
            return
    # None fits (the value is near the cap): spend the step on a subtraction, then just ask.
    op_sub(s)
    end_count(s)


def _pick_middle(s: Story, room: int) -> None:
    """Apply one feasible middle step using at most `room` equations (add or sub always fit)."""
    choices = [(w, op) for eqs, w, op in MIDDLE if eqs <= room]
    while choices:
        weights = [w for w, _ in choices]
        i = s.rng.choices(range(len(choices)), weights)[0]
        if choices[i][1](s):
            return
        choices.pop(i)
    raise AssertionError(f"no feasible step for value {s.value}")  # op_add or op_sub always fits


def problem_id(question: str) -> str:
    return "arith-" + hashlib.sha1(question.encode()).hexdigest()[:12]


def make_problem(rng: random.Random) -> dict:
    """One problem `{"id", "question", "answer"}`; the answer has one equation per line and `#### n`."""
    n_people = 3
    people = rng.sample(NAMES, n_people)
    s = Story(rng=rng, item=rng.choice(ITEMS), box=rng.choice(BOXES), people=list(people))
    total = rng.randint(MIN_STEPS, MAX_STEPS)
    end_eqs = 0 if rng.random() < P_END_COUNT else 1
    _, opening = rng.choice(OPENINGS)
    opening(s)
    while s.steps < total - end_eqs:
        _pick_middle(s, total - end_eqs - s.steps)
    if end_eqs:
        _end(s)
    else:
        end_count(s)
    question = " ".join(s.sentences)
    answer = "\n".join(s.lines + [f"#### {s.value}"])
    return {"id": problem_id(question), "question": question, "answer": answer}


def lexicon() -> list[str]:
    """Every word the generator can write, so a tokenizer built from samples misses none."""
    words = {w for name in NAMES for w in name} | {w for pair in ITEMS + BOXES for w in pair} | set(DAYS)
    return sorted(words)


def eval_questions() -> set[str]:
    """Question texts of the shipped evaluation split (read from disk, empty if not written yet)."""
    if not EVAL_FILE.exists():
        return set()
    return {p["question"] for p in eval_split(EVAL_FILE)}


COPY_PROMPT = "Repeat the problem."


def copy_problem(problem: dict) -> dict:
    """Auxiliary task: repeat a question word for word (an optional training mix-in).

    Copying from the prompt is the skill a small diffusion model is slowest to pick up from the
    worked solutions alone; some pure copying is meant to make it appear sooner.
    """
    return {"id": problem["id"] + "-copy", "question": f"{COPY_PROMPT}\n{problem['question']}", "answer": problem["question"]}


DRILL_PROMPT = "Work out each line."
EQUATION = re.compile(r"(\d+) ([+\-*/]) (\d+) = (\d+)")


def drill_problem(problem: dict) -> dict:
    """Auxiliary task: the solution's equations alone, to compute (an optional training mix-in).

    The worked solutions teach format and copying long before arithmetic; a drill puts the same
    equations, with the same numbers, in a few tokens, so more of each batch is computation.
    """
    equations = EQUATION.findall(problem["answer"])
    lines = [f"{a} {op} {b}" for a, op, b, _ in equations]
    answer = "\n".join(f"{a} {op} {b} = {r}." for a, op, b, r in equations)
    return {"id": problem["id"] + "-drill", "question": "\n".join([DRILL_PROMPT, *lines]),
            "answer": f"{answer}\n#### {equations[-1][3]}"}


class SeededStream:
    """A training-problem stream's resumable part: its RNG and how many problems it has yielded."""

    rng: random.Random
    seed: int
    count: int

    def state(self) -> dict:
        """JSON-able position in the stream (the RNG state and the count of problems yielded)."""
        version, internal, gauss = self.rng.getstate()
        return {"seed": self.seed, "count": self.count, "rng": [version, list(internal), gauss]}

    def load_state(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.seed, self.count = state["seed"], state["count"]


class ProblemStream(SeededStream):
    """Infinite, seeded training problems that skip the evaluation split; its state can be saved.

    With `copy_fraction` (`drill_fraction`) > 0, that share of the problems are `copy_problem`s
    (`drill_problem`s) instead.
    """

    def __init__(self, seed: int, exclude: set[str] | None = None, copy_fraction: float = 0.0,
                 drill_fraction: float = 0.0):
        if copy_fraction < 0 or drill_fraction < 0 or copy_fraction + drill_fraction > 1:
            raise ValueError(f"copy_fraction={copy_fraction} and drill_fraction={drill_fraction} must be >= 0 "
                             "and sum to at most 1")
        self.rng = random.Random(seed)
        self.seed = seed
        self.count = 0
        self.copy_fraction = copy_fraction
        self.drill_fraction = drill_fraction
        self.exclude = eval_questions() if exclude is None else exclude

    def __iter__(self) -> "ProblemStream":
        return self

    def __next__(self) -> dict:
        while True:
            p = make_problem(self.rng)
            if p["question"] not in self.exclude:
                self.count += 1
                if self.copy_fraction or self.drill_fraction:
                    u = self.rng.random()
                    if u < self.copy_fraction:
                        return copy_problem(p)
                    if u < self.copy_fraction + self.drill_fraction:
                        return drill_problem(p)
                return p



def problem_stream(seed: int) -> Iterator[dict]:
    """Infinite training problems for `seed`; never one whose question is in the eval split."""
    return ProblemStream(seed)


def eval_split(path: str | Path = EVAL_FILE) -> list[dict]:
    """The fixed evaluation problems (the shipped jsonl file by default)."""
    return loading.read_records(path)


def write_eval_split(path: str | Path = EVAL_FILE, n: int = EVAL_SIZE, seed: int = EVAL_SEED) -> Path:
    """Generate `n` distinct problems from `seed` and write them as jsonl (ids eval-0000, ...)."""
    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < n:
        p = make_problem(rng)
        if p["question"] in seen:
            continue
        seen.add(p["question"])
        rows.append({"id": f"eval-{len(rows):04d}", "question": p["question"], "answer": p["answer"]})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path
