"""Side-by-side speed of two copies of unmask in one process (e.g. before/after an engine change).

    cp -r src/unmask /tmp/ab/unmask_before      # snapshot before editing (relative imports only)
    PYTHONPATH=/tmp/ab python benchmarks/ab_compare.py --other unmask_before --rounds 5

Both copies decode the same prompts with the same methods; calls alternate (other, this, other,
other, ...) so load from other processes hits both alike. Reports per method and dtype the
median wall time of each and the ratio other / this (> 1: this copy is faster), and whether
the generated tokens agree.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time

import torch

import unmask
from unmask.profiling import prepare_machine

METHODS = {
    "baseline": (None, {}),
    "dual": ({"name": "prefix", "use_dual": True}, {"threshold": 0.9}),
    "prefix": ("prefix", {"threshold": 0.9}),
    "elastic": ("elastic", {}),
    "d2cache": ("d2cache", {}),
    "dllm": ("dllm", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--other", default="unmask_before")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--methods", default="baseline,dual,elastic")
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    prepare_machine(args.threads)
    other = importlib.import_module(args.other)
    from unmask.tasks import arith

    question = arith.eval_split()[0]["question"]
    print(f"threads={torch.get_num_threads()} gen_length={args.gen_length} rounds={args.rounds} other={args.other}")
    print(f"{'dtype':9s} {'method':9s} {'other s':>9s} {'this s':>9s} {'other/this':>10s} same-tokens")
    for dtype in args.dtypes.split(","):
        models = {"other": other.load(args.model, dtype=dtype), "this": unmask.load(args.model, dtype=dtype)}
        libs = {"other": other, "this": unmask}
        for name in args.methods.split(","):
            cache, opts = METHODS[name]
            times = {"other": [], "this": []}
            tokens = {}
            for r in range(args.rounds + 1):
                for side in (("this", "other") if r % 2 else ("other", "this")):
                    start = time.perf_counter()
                    out = libs[side].generate(models[side], prompts=[question], cache=cache, gen_length=args.gen_length, **opts)
                    if r:  # round 0 is the warm-up
                        times[side].append(time.perf_counter() - start)
                    tokens[side] = out.token_ids
            a, b = statistics.median(times["other"]), statistics.median(times["this"])
            print(f"{dtype:9s} {name:9s} {a:9.3f} {b:9.3f} {a / b:10.2f} {tokens['other'] == tokens['this']}")


if __name__ == "__main__":
    main()
