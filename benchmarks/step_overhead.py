"""Cost of a cached denoising step against the matrix-multiply time it contains, per dtype.

    python benchmarks/step_overhead.py [--model tiny] [--gen-length 256] [--threads 0]

The step is DualCache's (cache=prefix use_dual=true, threshold 0.9): after a block's refresh,
each step recomputes the block's 32 rows. Step time = median wall time from one step's start
to the next (forward, logits, selection, commit, policy events, stop checks). Matmul time = the
same step's matmuls replayed alone (see _profiling.py). Target: ratio <= 2.
"""

from __future__ import annotations

import argparse
import json

import torch
from _profiling import format_table, prepare_machine, profile_cached_steps, arith_prompt_ids, median, replay_seconds, step_matmuls, step_times

import unmask

DUAL = {"name": "prefix", "use_dual": True}


def measure(
    model_name: str, dtypes: list[str], gen_length: int = 256, block_length: int = 32, runs: int = 3, cprofile: bool = False
) -> list[dict]:
    """One row per dtype: median cached-step time, its matmul time and their ratio, and the refresh step.

    With `cprofile`, also prints where the first dtype's cached steps spend their time.
    """
    opts = {"gen_length": gen_length, "block_length": block_length, "threshold": 0.9}
    rows = []
    for dtype_name in dtypes:
        model = unmask.load(model_name, dtype=dtype_name)
        prompts = arith_prompt_ids(model)
        unmask.generate(model, input_ids=prompts, cache=DUAL, **opts)  # warm-up
        cached, refresh = [], []
        for _ in range(runs):
            for s in step_times(model, prompts, DUAL, **opts):
                (cached if s.block_step > 0 else refresh).append(s.seconds)
        calls = step_matmuls(model, prompts, DUAL, lambda ctx: ctx.block_step == 1, **opts)
        mm = replay_seconds(calls)
        if cprofile and dtype_name == dtypes[0]:
            profile_cached_steps(model, prompts, DUAL, **opts).sort_stats("tottime").print_stats(12)
        step = median(cached)
        rows.append({
            "dtype": dtype_name, "rows": block_length, "cached_step_ms": round(step * 1e3, 3), "matmul_ms": round(mm * 1e3, 3),
            "ratio": round(step / mm, 2), "refresh_step_ms": round(median(refresh) * 1e3, 3),
            "matmuls_per_step": len(calls), "cached_steps": len(cached),
        })
    return rows


COLUMNS = [("dtype", "dtype", "9s"), ("cached_step_ms", "step ms", "8.3f"), ("matmul_ms", "matmul ms", "10.3f"),
                        ("ratio", "ratio", "6.2f"), ("refresh_step_ms", "refresh ms", "11.3f"), ("matmuls_per_step", "matmuls", "8d")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--cprofile", action="store_true", help="also print where a cached step's time goes (first dtype)")
    args = parser.parse_args()
    prepare_machine(args.threads)
    rows = measure(args.model, args.dtypes.split(","), args.gen_length, args.block_length, args.runs, args.cprofile)
    print(f"model={args.model} threads={torch.get_num_threads()} gen_length={args.gen_length} rows={args.block_length}")
    print(format_table(rows, COLUMNS))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
