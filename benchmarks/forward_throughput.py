"""Full-forward throughput against the machine's matrix-multiply throughput, per dtype.

    python benchmarks/forward_throughput.py [--model tiny] [--gen-length 256] [--batch 1] [--threads 0]

The full forward is the step the baseline pays every time: every canvas row through every
layer, logits for one block. Its FLOPs are counted by torch's FLOP counter (matmuls and
attention); its throughput is FLOPs / best wall time. The matmul peak is a 1024^3 matmul in the
same dtype on the same threads. Target: ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import json

import torch
from _profiling import format_table, prepare_machine, arith_prompt_ids, best_seconds, count_flops, matmul_peak

import unmask
from unmask.engine import Rows, StepPlan, make_state, run_plan


def full_forward(model, prompt_ids: list[list[int]], gen_length: int, block_length: int = 32):
    """A closure running one full engine forward over prompt ++ masks (left-padded batch)."""
    width = max(len(p) for p in prompt_ids)
    b, t = len(prompt_ids), width + gen_length
    canvas = torch.full((b, t), model.special.mask, dtype=torch.long)
    valid = torch.ones(b, t, dtype=torch.bool)
    for i, ids in enumerate(prompt_ids):
        canvas[i, : width - len(ids)] = model.special.pad
        valid[i, : width - len(ids)] = False
        canvas[i, width - len(ids) : width] = torch.tensor(ids)
    state = make_state(model.module, canvas, valid)
    plan = StepPlan(rows=state.all_rows(), logit_positions=Rows.range(width, width + block_length, b))

    def run():
        with torch.inference_mode():
            return run_plan(model.module, state, plan)

    return run, t


def measure(model_name: str, dtypes: list[str], gen_length: int = 256, batch: int = 1, repeat: int = 7) -> list[dict]:
    """One row per dtype: full-forward time, its FLOP/s, the matmul peak and their ratio."""
    rows = []
    for dtype_name in dtypes:
        model = unmask.load(model_name, dtype=dtype_name)
        prompts = arith_prompt_ids(model, n=batch)
        run, length = full_forward(model, prompts, gen_length)
        flops = count_flops(run)
        seconds = best_seconds(run, repeat=repeat, number=3)
        peak = matmul_peak(model.dtype, repeat=repeat)
        forward = flops / seconds
        rows.append({
            "dtype": dtype_name, "rows": length * batch, "forward_ms": round(seconds * 1e3, 3),
            "forward_gflops": round(forward / 1e9, 2), "matmul_gflops": round(peak / 1e9, 2),
            "ratio": round(forward / peak, 3),
        })
    return rows


COLUMNS = [("dtype", "dtype", "9s"), ("rows", "rows", "5d"), ("forward_ms", "forward ms", "11.3f"),
                        ("forward_gflops", "fwd GFLOP/s", "12.2f"), ("matmul_gflops", "mm GFLOP/s", "11.2f"), ("ratio", "ratio", "6.2f")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    prepare_machine(args.threads)
    rows = measure(args.model, args.dtypes.split(","), args.gen_length, args.batch, args.repeat)
    print(f"model={args.model} threads={torch.get_num_threads()} gen_length={args.gen_length} batch={args.batch}")
    print(format_table(rows, COLUMNS))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
