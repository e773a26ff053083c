"""Baseline accuracy of a checkpoint on the bundled arith eval split (the number a model card quotes).

    python benchmarks/arith_accuracy.py [--model tiny] [--n 100] [--gen-length 256] [--batch 20]

Decoding is the issue's reference setting, resolved exactly as `unmask eval` resolves it: no
cache, one token per step, blocks of 32; sequences stop once everything before their first
EOS/EOT is decoded (the answer text is unchanged by that: committed tokens never move). Adds
what the card also quotes: the share of outputs that end (EOS within the canvas) after an
`#### n` answer line.
"""

from __future__ import annotations

import argparse
import json
import time

from unmask.config import load_model, resolve_config
from unmask.evaluation import run_samples, task_samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny", help="a model config name or a checkpoint directory")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()
    cfg = resolve_config([f"model={args.model}", "dataset.name=arith", f"dataset.limit={args.n}",
                          f"generation.gen_length={args.gen_length}", "generation.stop_until_eos=true"])
    model = load_model(cfg)
    task, samples = task_samples(cfg)
    start = time.perf_counter()
    recs = run_samples(model, task, samples, generation=cfg.generation, batch_size=args.batch, warmup=False)
    ended = sum(r["tokens"] < args.gen_length and "####" in r["output"] for r in recs)
    print(json.dumps({"model": args.model, "n": len(recs), "gen_length": args.gen_length,
                      "accuracy": sum(r["correct"] for r in recs) / len(recs), "ended_with_answer_line": ended / len(recs),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
