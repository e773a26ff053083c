"""MATH-500 with a 4-shot Minerva-format prompt ("Problem:\\n...\\n\\nSolution:" ... "Final Answer:
The final answer is X. I hope it is correct.").

The four exemplars are unmask's own short problems (algebra, fractions, number theory,
coordinates) written in that format. Answers are judged by math_answers.equivalent.
"""

from __future__ import annotations

from . import loading, math_answers
from .base import Sample, Score, Task
from .prompting import check_n_shot, cut_at_stops

HUB = loading.HubDataset("HuggingFaceH4/MATH-500")
FIELDS = "problem, answer (or a solution with \\boxed{...}); optional unique_id, subject, level"

# (problem, worked solution, final answer in LaTeX)
EXEMPLARS: tuple[tuple[str, str, str], ...] = (
    (
        "Solve for $x$: $5x - 8 = 2x + 13$.",
        "Subtracting $2x$ from both sides gives $3x - 8 = 13$. Adding $8$ to both sides gives $3x = 21$, "
        "so $x = 7$.",
        "7",
    ),
    (
        "Compute $\\frac{3}{4} - \\frac{1}{6}$.",
        "The least common denominator of $4$ and $6$ is $12$. Then $\\frac{3}{4} = \\frac{9}{12}$ and "
        "$\\frac{1}{6} = \\frac{2}{12}$, so the difference is $\\frac{9 - 2}{12} = \\frac{7}{12}$.",
        "\\frac{7}{12}",
    ),
    (
        "How many positive divisors does $72$ have?",
        "Since $72 = 2^3 \\cdot 3^2$, a divisor is $2^a 3^b$ with $0 \\le a \\le 3$ and $0 \\le b \\le 2$. "
        "There are $(3 + 1)(2 + 1) = 12$ such choices.",
        "12",
    ),
    (
        "Find the vertex of the parabola $y = x^2 + 6x + 4$.",
        "Completing the square, $y = (x^2 + 6x + 9) - 9 + 4 = (x + 3)^2 - 5$. "
        "The vertex is where $x + 3 = 0$, which is the point $(-3, -5)$.",
        "(-3, -5)",
    ),
)


def format_problem(problem: str) -> str:
    return f"Problem:\n{problem.strip()}\n\nSolution:"


def format_exemplar(problem: str, solution: str, answer: str) -> str:
    return (
        f"{format_problem(problem)}\n{solution}\n"
        f"Final Answer: The final answer is ${answer}$. I hope it is correct."
    )


class Math500Task(Task):
    name = "math-500"
    default_gen_length = 256
    default_n_shot = 4
    use_chat_template = False
    eval_split = "test"

    def __init__(self, n_shot: int | None = None, path: str | None = None, split: str | None = None) -> None:
        super().__init__(n_shot=n_shot, path=path, split=split)
        check_n_shot(self.name, self.n_shot, len(EXEMPLARS))

    def few_shot_prefix(self) -> str:
        return "".join(format_exemplar(*ex) + "\n\n" for ex in EXEMPLARS[: self.n_shot])

    def load(self) -> list[Sample]:
        loading.check_file_split(self.path, self.split)
        split = self.split or self.eval_split
        rows = loading.load_split(self.name, HUB, self.path, split, FIELDS)
        prefix = self.few_shot_prefix()
        samples = []
        for i, row in enumerate(rows):
            where = f"{self.name} {split} row {i}"
            problem = str(loading.field(row, ("problem", "question"), where))
            try:
                gold = math_answers.reference_answer(row.get("answer"), row.get("solution"))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            sample_id = str(row.get("unique_id") or row.get("id") or f"{self.name}-{split}-{i}")
            meta = {k: row[k] for k in ("subject", "level") if row.get(k) is not None}
            samples.append(Sample(id=sample_id, prompt=prefix + format_problem(problem), reference=gold, meta=meta))
        return samples

    def stop_strings(self) -> list[str]:
        return ["Problem:"]

    def score(self, sample: Sample, output: str) -> Score:
        extracted = math_answers.extract_answer(cut_at_stops(output, self.stop_strings()))
        return Score(extracted=extracted, correct=math_answers.equivalent(extracted, str(sample.reference)))
