"""Accuracy of a LLaDA-V checkpoint on the bundled arith-v split, with the pictures and blanked
(the two numbers the tiny-v model card quotes).

    python benchmarks/arith_v_accuracy.py [--model tiny-v] [--n 200] [--batch 25] [--splits eval,blank]

Decoding is what `unmask eval model=tiny-v` resolves (no cache, one token per step, blocks of 32,
gen_length 64, the llada-v family's generation rules); the blank split shows the same problems
with every picture blanked, so its accuracy is what the model gets without reading the pictures.
Also prints accuracy per picture count.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

from unmask.config import load_model, resolve_config
from unmask.evaluation import run_samples, task_samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-v", help="a model config name or a checkpoint directory")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--splits", default="eval,blank")
    args = parser.parse_args()
    model = None
    for split in args.splits.split(","):
        cfg = resolve_config([f"model={args.model}", "dataset.name=arith-v", f"dataset.limit={args.n}",
                              f"dataset.split={split}"])
        model = model or load_model(cfg)
        task, samples = task_samples(cfg)
        start = time.perf_counter()
        recs = run_samples(model, task, samples, generation=cfg.generation, batch_size=args.batch, warmup=False)
        by_count: dict[int, list[bool]] = defaultdict(list)
        for sample, rec in zip(samples, recs):
            by_count[sample.meta["count"]].append(bool(rec["correct"]))
        print(json.dumps({"model": args.model, "split": split, "n": len(recs),
                          "accuracy": sum(r["correct"] for r in recs) / len(recs),
                          "by_count": {k: round(sum(v) / len(v), 2) for k, v in sorted(by_count.items())},
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
