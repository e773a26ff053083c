"""Baseline accuracy of a checkpoint on the bundled arith eval split (the number a model card quotes).

    python benchmarks/arith_accuracy.py [--model tiny] [--n 100] [--gen-length 256] [--batch 20]

Decoding is the issue's reference setting: no cache, one token per step, blocks of 32;
sequences stop once everything before their first EOS/EOT is decoded (the answer text is
unchanged by that: committed tokens never move).
"""

from __future__ import annotations

import argparse
import json
import time

import unmask
from unmask.tasks import answers, arith


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    model = unmask.load(args.model)
    problems = arith.eval_split()[: args.n]
    correct, ended, start = 0, 0, time.perf_counter()
    for i in range(0, len(problems), args.batch):
        chunk = problems[i : i + args.batch]
        r = unmask.generate(model, prompts=[p["question"] for p in chunk], gen_length=args.gen_length,
                            block_length=32, stop_until_eos=True)
        for p, text, n in zip(chunk, r.texts, r.answer_tokens):
            correct += answers.is_correct(text, p["answer"])
            ended += n < args.gen_length and "####" in text
    print(json.dumps({"model": args.model, "n": len(problems), "gen_length": args.gen_length,
                      "accuracy": correct / len(problems), "ended_with_answer_line": ended / len(problems),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
