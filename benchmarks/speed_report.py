"""Every speed number of the README's "Speed" section, from one command.

    python benchmarks/speed_report.py --out outputs/speed [--samples 100] [--sweep-samples 20] [--lengths 64,128,256,416]

1. full-forward throughput vs the machine's matmul throughput (`unmask bench mode=engine`), per dtype;
2. a cached 32-row DualCache step vs its matmul time (the same command), per dtype;
3. `unmask bench` (all methods, paper defaults, full canvas) on the bundled task, per dtype: the
   main table at gen_length 256 on --samples samples, then a speedup-vs-length sweep on the first
   --sweep-samples samples; tables, CSV/JSON and plots under --out.
Writes --out/SPEED.md (markdown tables + plot links) and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from unmask import bench
from unmask.engine_bench import run_engine_bench
from unmask.profiling import prepare_machine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="outputs/speed")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--sweep-samples", type=int, default=20)
    parser.add_argument("--gen-length", type=int, default=256)
    parser.add_argument("--lengths", default="64,128,256,416")
    parser.add_argument("--methods", default=",".join(bench.METHODS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    prepare_machine(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dtypes = args.dtypes.split(",")
    started = time.time()
    command = "python benchmarks/speed_report.py " + " ".join(sys.argv[1:])

    benches, sweeps, forward, steps = {}, {}, [], []
    methods = args.methods.split(",")
    for dtype in dtypes:
        user = [f"model.dtype={dtype}", f"generation.gen_length={args.gen_length}"]
        if args.model != "tiny":
            user.append(f"model.path={args.model}")
        engine = run_engine_bench([*user, f"output_dir={out / f'engine-{dtype}'}"])
        forward += engine["forward"]
        steps += engine["steps"]
        benches[dtype] = bench.run_bench(
            [*user, f"dataset.limit={args.samples}", f"output_dir={out / f'bench-{dtype}'}"], methods=methods, trace=True
        )
        sweeps[dtype] = bench.run_bench(
            [*user, f"dataset.limit={args.sweep_samples}", f"output_dir={out / f'lengths-{dtype}'}"], methods=methods,
            lengths=[int(x) for x in args.lengths.split(",")], trace=False,
        )

    info = bench.machine()
    lines = [
        f"Machine: {info['cpu']}, {info['cpu_count']} CPUs, torch {info['torch']}, {info['torch_threads']} threads. "
        f"Command: `{command}` ({(time.time() - started) / 60:.0f} min).",
        "",
        "Full forward vs matrix-multiply throughput (target: ratio >= 0.5):",
        "",
        "| dtype | canvas rows | forward ms | forward GFLOP/s | matmul GFLOP/s | ratio |",
        "|---|---|---|---|---|---|",
        *[f"| {r['dtype']} | {r['rows']} | {r['forward_ms']:.2f} | {r['forward_gflops']:.1f} | {r['matmul_gflops']:.1f} | "
          f"{r['ratio']:.2f} |" for r in forward],
        "",
        "Cached DualCache step over 32 rows vs its matrix-multiply time (target: ratio <= 2):",
        "",
        "| dtype | step ms | matmul ms | ratio | refresh step ms |",
        "|---|---|---|---|---|",
        *[f"| {r['dtype']} | {r['cached_step_ms']:.3f} | {r['matmul_ms']:.3f} | {r['ratio']:.2f} | {r['refresh_step_ms']:.2f} |"
          for r in steps],
    ]
    for dtype, payload in benches.items():
        lines += ["", f"`unmask bench` ({dtype}): {payload['header'].splitlines()[0].removeprefix('unmask bench: ')}", "",
                  "| method | accuracy % | tokens/s | speedup | latency s | NFE | tokens/forward | refresh fraction | peak MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in payload["methods"]:
            lines.append(
                f"| {r['method']} | {_f(r['accuracy'], 100, 1)} | {_f(r['tokens_per_second'], 1, 1)} | {_f(r['speedup'], 1, 2)}x | "
                f"{_f(r['latency_seconds'], 1, 3)} | {_f(r['nfe'], 1, 1)} | {_f(r['tokens_per_forward'], 1, 2)} | "
                f"{_f(r['refresh_fraction'], 1, 3)} | {_f(r['peak_memory_mb'], 1, 0)} |"
            )
        sweep = sweeps[dtype]["speedup_vs_length"]
        lengths = sorted({int(k) for s in sweep.values() for k in s})
        n_sweep = len(sweeps[dtype]["records"][str(lengths[0])]["baseline" if "baseline" in sweep else methods[0]])
        lines += ["", f"Speedup over baseline by gen_length ({dtype}, {n_sweep} samples):", "",
                  "| method | " + " | ".join(str(n) for n in lengths) + " |", "|---|" + "---|" * len(lengths)]
        for method, s in sweep.items():
            lines.append(f"| {method} | " + " | ".join(_f(s.get(str(n)), 1, 1) + "x" for n in lengths) + " |")
        main_dir, sweep_dir = payload["output_dir"], sweeps[dtype]["output_dir"]
        lines += ["", f"Plots: `{main_dir}/pareto.png`, `{main_dir}/trace.png`, `{sweep_dir}/speedup_vs_length.png`"]
    text = "\n".join(lines) + "\n"
    (out / "SPEED.md").write_text(text)
    (out / "speed.json").write_text(json.dumps({"forward": forward, "steps": steps, "machine": info, "command": command}, indent=1))
    print(text)


def _f(value, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


if __name__ == "__main__":
    main()
