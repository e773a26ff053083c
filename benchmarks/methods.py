"""Tokens/s of every cache method against the baseline, interleaved in one run.

    python benchmarks/methods.py [--model tiny] [--n 8] [--gen-length 256] [--dtype float32]

Each round runs every method once on the same prompt, so machine drift hits all alike;
a warm-up round is discarded. Accuracy is scored on the bundled arith task when the
model is the bundled one.
"""

from __future__ import annotations

import argparse
import time

import torch

import unmask

METHODS = {
    "baseline": (None, {}),
    "parallel": (None, {"threshold": 0.9}),
    "prefix": ("prefix", {"threshold": 0.9}),
    "dual": ({"name": "prefix", "use_dual": True}, {"threshold": 0.9}),
    "dllm": ("dllm", {}),
    "d2cache": ("d2cache", {}),
    "elastic": ("elastic", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = unmask.load(args.model, dtype=args.dtype)
    from unmask.tasks import answers, arith

    problems = arith.eval_split()[: args.n + 1]
    names = args.methods.split(",")
    stats = {m: {"tokens": 0, "seconds": 0.0, "nfe": 0, "correct": 0} for m in names}
    for i, problem in enumerate(problems):
        for name in names:
            cache, opts = METHODS[name]
            start = time.perf_counter()
            r = unmask.generate(model, prompts=[problem["question"]], cache=cache, gen_length=args.gen_length,
                                block_length=args.block_length, **opts)
            seconds = time.perf_counter() - start
            if i == 0:
                continue  # warm-up
            s = stats[name]
            s["tokens"] += r.answer_tokens[0]
            s["seconds"] += seconds
            s["nfe"] += r.nfe[0]
            s["correct"] += int(answers.is_correct(r.texts[0], problem["answer"]))
    base = stats.get("baseline")
    print(f"model={args.model} dtype={args.dtype} gen_length={args.gen_length} samples={args.n} threads={torch.get_num_threads()}")
    print(f"{'method':10s} {'acc':>6s} {'tok/s':>8s} {'speedup':>8s} {'NFE':>7s} {'s/sample':>9s}")
    for name, s in stats.items():
        tps = s["tokens"] / s["seconds"] if s["seconds"] else 0.0
        speed = (base["seconds"] / s["seconds"]) if base and s["seconds"] else float("nan")
        print(f"{name:10s} {s['correct'] / args.n:6.1%} {tps:8.1f} {speed:7.2f}x {s['nfe'] / args.n:7.1f} {s['seconds'] / args.n:9.3f}")


if __name__ == "__main__":
    main()
