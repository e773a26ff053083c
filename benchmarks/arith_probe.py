"""Can a checkpoint compute? The first equation of each solution, with everything before it given.

    python benchmarks/arith_probe.py [--model tiny] [--n 300]

For each evaluation problem: the question (chat template) plus the gold solution up to the first
"a op b = " is the clean context, then masks; the result's tokens (one per digit, or one for a
whole number, as the model's tokenizer splits it) are filled greedily left to right, one forward
each. Prints exact-result accuracy per operation and operand size, which
separates "cannot do arithmetic" from "loses track of the story" when whole-problem accuracy
is low (the model card quotes this).
"""

from __future__ import annotations

import argparse
import json
import re

import torch

import unmask
from unmask.models.tokenizer import encode_prompts
from unmask.tasks import arith

EQUATION = re.compile(r"(\d+) ([+\-*/]) (\d+) = (\d+)")


def first_result(model, question: str, prefix: str, n_tokens: int) -> str:
    """Greedy left-to-right fill of `n_tokens` masked positions after question + prefix."""
    context = encode_prompts(model, [question], chat=True)[0] + model.tokenizer.encode(prefix)
    canvas = torch.tensor([context + [model.special.mask] * 64])
    out = []
    for k in range(n_tokens):
        with torch.inference_mode():
            token = model.module(canvas)[0, len(context) + k].argmax().item()
        canvas[0, len(context) + k] = token
        out.append(model.tokenizer.decode([token]))
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    model = unmask.load(args.model)
    tally: dict[str, list[int]] = {}
    for problem in arith.eval_split()[: args.n]:
        match = EQUATION.search(problem["answer"])
        if not match:
            continue
        a, op, b, result = match.groups()
        n_tokens = len(model.tokenizer.encode(result))
        guess = first_result(model, problem["question"], problem["answer"][: match.start(4)], n_tokens)
        key = f"{op} {'one-digit' if max(len(a), len(b)) == 1 else 'multi-digit'}"
        hits = tally.setdefault(key, [0, 0])
        hits[0] += guess == result
        hits[1] += 1
    for key, (right, total) in sorted(tally.items()):
        print(f"{key:16s} {right:4d}/{total:<4d} {right / total:6.0%}")
    print(json.dumps({"model": args.model, "n": args.n, "by_kind": tally}))


if __name__ == "__main__":
    main()
