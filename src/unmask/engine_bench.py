"""`unmask bench mode=engine`: how close the CPU engine gets to the machine's matrix-multiply speed.

Two measurements per dtype, with the tools of `unmask.profiling`:

- full forward: one engine forward over prompt ++ masks (every canvas row through every layer,
  logits for one block; the step the baseline pays every time). Its matmul FLOPs over its best
  wall time, against a 1024^3 matmul's FLOP/s in the same dtype on the same threads. Target >= 0.5.
- cached step: DualCache's (cache=prefix use_dual=true, threshold 0.9) step over one block's rows
  after the block's refresh. Median wall time from one step's start to the next (forward,
  logits, selection, commit, policy events, stop checks), against the same step's matmuls
  replayed alone. Target <= 2.

Prompts are the bundled arith task's first questions, as `generate` encodes them.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import torch

from .engine import Rows, StepPlan, make_state, run_plan
from .generate import generate
from .machine_info import machine
from .profiling import (
    arith_prompt_ids,
    best_seconds,
    count_flops,
    matmul_peak,
    median,
    profile_cached_steps,
    replay_seconds,
    step_matmuls,
    step_times,
)

DUAL = {"name": "prefix", "use_dual": True}
DEFAULT_DTYPES = ("float32", "bfloat16")
FORWARD_COLUMNS = [("dtype", "dtype", "9s"), ("rows", "rows", "5d"), ("forward_ms", "forward ms", "11.3f"),
                   ("forward_gflops", "fwd GFLOP/s", "12.2f"), ("matmul_gflops", "mm GFLOP/s", "11.2f"), ("ratio", "ratio", "6.2f")]
STEP_COLUMNS = [("dtype", "dtype", "9s"), ("cached_step_ms", "step ms", "8.3f"), ("matmul_ms", "matmul ms", "10.3f"),
                ("ratio", "ratio", "6.2f"), ("refresh_step_ms", "refresh ms", "11.3f"), ("matmuls_per_step", "matmuls", "8d")]


def full_forward(model, prompt_ids: list[list[int]], gen_length: int, block_length: int = 32):
    """A closure running one full engine forward over prompt ++ masks (left-padded batch), and the canvas length."""
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


def forward_row(model, gen_length: int, block_length: int = 32, batch: int = 1, repeat: int = 7) -> dict[str, Any]:
    """Full-forward time, its FLOP/s, the matmul peak and their ratio, for a loaded model."""
    run, length = full_forward(model, arith_prompt_ids(model, n=batch), gen_length, block_length)
    flops = count_flops(run)
    seconds = best_seconds(run, repeat=repeat, number=3)
    peak = matmul_peak(model.dtype, repeat=repeat)
    forward = flops / seconds
    return {
        "rows": length * batch, "forward_ms": round(seconds * 1e3, 3), "forward_gflops": round(forward / 1e9, 2),
        "matmul_gflops": round(peak / 1e9, 2), "ratio": round(forward / peak, 3),
    }


def step_row(model, gen_length: int, block_length: int = 32, runs: int = 3, cprofile: bool = False) -> dict[str, Any]:
    """Median cached-step time, its matmul time and their ratio, and the refresh step, for a loaded model.

    With `cprofile`, also prints where the cached steps spend their time."""
    opts = {"gen_length": gen_length, "block_length": block_length, "threshold": 0.9}
    prompts = arith_prompt_ids(model)
    generate(model, input_ids=prompts, cache=DUAL, **opts)  # warm-up
    cached, refresh = [], []
    for _ in range(runs):
        for s in step_times(model, prompts, DUAL, **opts):
            (cached if s.block_step > 0 else refresh).append(s.seconds)
    if not cached:
        raise ValueError(
            f"generation.gen_length={gen_length}: every block was decoded in its refresh step, so there is no "
            "cached step to time; use a longer generation.gen_length"
        )
    calls = step_matmuls(model, prompts, DUAL, lambda ctx: ctx.block_step == 1, **opts)
    mm = replay_seconds(calls)
    if cprofile:
        profile_cached_steps(model, prompts, DUAL, **opts).sort_stats("tottime").print_stats(12)
    step = median(cached)
    return {
        "rows": block_length, "cached_step_ms": round(step * 1e3, 3), "matmul_ms": round(mm * 1e3, 3),
        "ratio": round(step / mm, 2), "refresh_step_ms": round(median(refresh) * 1e3, 3),
        "matmuls_per_step": len(calls), "cached_steps": len(cached),
    }


def text_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Fixed-width text table; columns are (key, header, format spec such as '8.3f')."""
    widths = [max(len(header), int(re.match(r"\d*", spec).group() or 0)) for _, header, spec in columns]
    lines = [" ".join(f"{header:>{w}s}" for (_, header, _), w in zip(columns, widths))]
    for r in rows:
        lines.append(" ".join(f"{r[key]:>{w}{spec.lstrip('0123456789')}}" if not isinstance(r[key], str)
                              else f"{r[key]:>{w}s}" for (key, _, spec), w in zip(columns, widths)))
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


def report(forward: list[dict], steps: list[dict], header: str, out: Path, extra: dict[str, Any]) -> None:
    """Print both tables and write forward.csv, step.csv and engine.json to `out`."""
    print(header)
    print("full forward vs matrix-multiply throughput (target: ratio >= 0.5)")
    print(text_table(forward, FORWARD_COLUMNS))
    print("cached DualCache step vs its matrix-multiply time (target: ratio <= 2)")
    print(text_table(steps, STEP_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(forward, out / "forward.csv")
    write_csv(steps, out / "step.csv")
    payload = {"header": header, **extra, "forward": forward, "steps": steps}
    (out / "engine.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"wrote {out}/forward.csv, step.csv, engine.json")


# -- the command --------------------------------------------------------------------------------

ENGINE_KEYS = ("model", "generation.gen_length", "generation.block_length", "batch_size", "attn_implementation", "output_dir")


def check_overrides(user: list[str]) -> None:
    """mode=engine fixes the decoding it times (DualCache, threshold 0.9, arith prompts): anything
    else would be silently ignored, so it is an error."""
    for item in user:
        key = item.split("=", 1)[0].strip()
        if key not in ENGINE_KEYS and not key.startswith("model."):
            raise ValueError(f"'{item}' is not a mode=engine setting; it takes model=, model.*, {', '.join(ENGINE_KEYS[1:])}")


def run_engine_bench(
    user: list[str], repeat: int = 7, runs: int = 3, cprofile: bool = False, command: str | None = None
) -> dict[str, Any]:
    """Both measurements for model.dtype (both float32 and bfloat16 when it is not given); prints the
    tables, writes the files and returns what engine.json holds."""
    from .config import load_model, resolve_config

    check_overrides(user)
    for key, value in (("repeat", repeat), ("runs", runs)):
        if value < 1:
            raise ValueError(f"{key}={value} must be >= 1")
    given = [o.split("=", 1)[1] for o in user if o.split("=", 1)[0].strip() == "model.dtype"]
    rest = [o for o in user if o.split("=", 1)[0].strip() != "model.dtype"]
    cfgs = [resolve_config([*rest, f"model.dtype={d}"]) for d in (given or DEFAULT_DTYPES)]
    for cfg in cfgs:
        if cfg.model["device"] not in ("auto", "cpu"):
            raise ValueError(f"model.device={cfg.model['device']}: mode=engine measures the CPU engine (use cpu or auto)")
    first = cfgs[0]
    gen_length, block_length = int(first.generation["gen_length"]), int(first.generation["block_length"])
    forward, steps = [], []
    for i, cfg in enumerate(cfgs):
        dtype = cfg.model["dtype"]
        model = load_model(cfg, device="cpu")
        forward.append({"dtype": dtype, **forward_row(model, gen_length, block_length, cfg.batch_size, repeat)})
        steps.append({"dtype": dtype, **step_row(model, gen_length, block_length, runs, cprofile and i == 0)})
    name = str(first.model["name"] if first.model["path"] is None else first.model["path"])
    header = (f"unmask bench mode=engine: model={name} threads={torch.get_num_threads()} gen_length={gen_length} "
              f"block_length={block_length} batch_size={first.batch_size}")
    out = Path(first.output_dir or Path("outputs") / "bench" / f"engine-{first.model['name']}-gen{gen_length}")
    extra = {"machine": machine(), "command": command or "unmask bench mode=engine " + " ".join(user)}
    report(forward, steps, header, out, extra)
    return {"header": header, **extra, "forward": forward, "steps": steps, "output_dir": str(out)}
