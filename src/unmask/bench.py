"""`unmask bench`: cache methods side by side on one model, one task, the same samples, one clock.

Every method decodes every sample; the methods take turns sample by sample (interleaved), so a
machine that slows down or speeds up during the run affects all of them alike, and each method
runs one untimed warm-up first. The numbers come from the evaluation runner's records and
`unmask.metrics` (one definition for `unmask eval` and `unmask bench`); the speedup of a method
is the baseline's generation time over the method's, both from this run's records.

By default the bench decodes the full canvas (`generation.stop_until_eos=false`): every method
denoises all `gen_length` positions, EOS padding included, which is how the papers measure
speedups. With `generation.stop_until_eos=true` a sequence stops once its answer is complete.
The bench process keeps freed memory (`bench_allocator.keep_freed_memory`), so no method's
steps pay page faults for re-mapped temporaries.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

from . import metrics
from .bench_allocator import keep_freed_memory
from .machine_info import machine
from .config import (
    RunConfig,
    command_main,
    load_model,
    require_model_path,
    resolve_config,
    resolve_device,
    split_overrides,
)
from .parsing import parse_value

# Each method's paper defaults, as overrides on top of the user's (the user's value wins).
# Parallel (threshold) decoding where the paper decodes that way: Fast-dLLM (prefix, dual) and
# Elastic-Cache (threshold = its tau, set by the policy); dLLM-Cache and d2Cache decode one
# token per step.
METHODS: dict[str, list[str]] = {
    "baseline": [],
    "parallel": ["generation.threshold=0.9"],
    "prefix": ["cache=prefix", "generation.threshold=0.9"],
    "dual": ["cache=prefix", "cache.use_dual=true", "generation.threshold=0.9"],
    "dllm": ["cache=dllm"],
    "d2cache": ["cache=d2cache"],
    "elastic": ["cache=elastic"],
}
OWN_KEYS: dict[str, Any] = {
    "mode": str, "methods": list, "lengths": list[int], "trace": bool, "trace_methods": list, "threads": int,
    "repeat": int, "runs": int, "cprofile": bool, "clients": list[int], "requests": int, "rate": float,
    "server": str,
}
# What each mode= runs, and the own keys only that mode reads (threads= is for both).
MODES: dict[str, tuple[str, ...]] = {
    "methods": ("methods", "lengths", "trace", "trace_methods"),
    "engine": ("repeat", "runs", "cprofile"),
    "serve": ("clients", "requests", "rate", "server"),
}
DEFAULT_LIMIT = 10
CSV_COLUMNS = (
    "method", "cache", "gen_length", "batch_size", "samples", "accuracy", "tokens_per_second", "speedup", "vs_batch1",
    "latency_seconds",
    "nfe", "tokens_per_forward", "refresh_fraction", "row_fraction", "peak_memory_mb", "answer_tokens",
    "generation_seconds",
)
USAGE = f"""usage: unmask bench [methods=a,b,...] [lengths=L1,L2,...] [batch_size=B1,B2,...] [trace=true|false]
                    [trace_methods=a,b] [threads=N] [key=value ...]
       unmask bench mode=engine [model=M] [model.dtype=D] [threads=N] [repeat=7] [runs=3] [cprofile=true|false]
       unmask bench mode=serve [clients=1,4,16,64] [requests=8] [rate=10] [threads=N] [server=subprocess|inprocess]
                    [server settings ...]

Runs cache methods side by side on the same samples (interleaved, warm-up first) and writes
results.csv, results.json, pareto.png, speedup_vs_length.png and trace.png to output_dir.
  methods=       {",".join(METHODS)} (default: all, each with its paper defaults);
                 a variant changes settings of one: dllm/cache.kr=2, d2cache/generation.block_length=32
  lengths=       generation lengths for speedup_vs_length.png, one run each (default: generation.gen_length)
  batch_size=    prompts per generate call (default 1); several (batch_size=1,4,16) run every method at each,
                 on the same samples, batch sizes taking turns: one row per (method, batch size), speedup
                 against the baseline at the same batch size, vs_batch1 = tokens/s over the same method's
                 at the smallest batch size. With lengths= too, every length runs at every batch size;
                 results.csv holds generation.gen_length's rows, the plots the smallest batch size's.
  trace=         draw trace.png for one sample (default true); trace_methods= the two methods (default: two cache methods)
  threads=       torch CPU threads (default: torch's)
Other overrides as in unmask eval: model=tiny model.dtype=bfloat16 dataset.name=arith dataset.limit=20
generation.gen_length=256 ... (dataset.limit defaults to {DEFAULT_LIMIT} here). The full canvas is decoded
(generation.stop_until_eos=false) unless you set generation.stop_until_eos=true.

mode=engine (default mode=methods: the above) measures the CPU engine instead, per dtype (model.dtype=,
default both float32 and bfloat16): a full forward's FLOP/s over a 1024^3 matmul's (best of repeat=),
and a cached 32-row DualCache step's median time over its matmuls replayed alone (runs= generate
calls); prints both tables and writes forward.csv, step.csv and engine.json to output_dir.
cprofile=true also prints where the first dtype's cached steps spend their time. It also takes
generation.gen_length=, generation.block_length=, batch_size= (the forward's batch), output_dir=.

mode=serve starts two `unmask serve` subprocesses on the rest of the command line (model, cache,
generation and serve settings), continuous=true and continuous=false, and drives each in turn with
clients= concurrent streaming clients, each sending requests= bundled arith questions after
exponential gaps of mean 1/rate s (max_tokens: the reference answer's length); writes serve.csv
(requests/s, tokens/s, p50/p99 latency, time to first token), serve.json and serve.png to output_dir.
server=inprocess runs both servers as threads of the bench process on one loaded model (quick to
start; the clients then share the interpreter with the engines, so measure with the default subprocess)."""


# -- configuration ------------------------------------------------------------------------------


def _key(item: str) -> str:
    return item.split("=", 1)[0].strip()


VARIANT_PREFIXES = ("cache.", "generation.")


def parse_method(spec: str) -> tuple[str, list[str]]:
    """`dllm/cache.kr=2/cache.rou=0.5` -> ("dllm", ["cache.kr=2", "cache.rou=0.5"]).

    A variant is a method with some of its cache or generation settings changed, so that a
    parameter sweep runs side by side (interleaved, one clock) with the paper defaults."""
    name, *settings = spec.split("/")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} in methods=; valid: {','.join(METHODS)} (variants: name/key=value/...)")
    for item in settings:
        if "=" not in item or not _key(item).startswith(VARIANT_PREFIXES):
            raise ValueError(
                f"methods=...{spec}: '{item}' is not a cache.KEY=VALUE or generation.KEY=VALUE setting of the variant"
            )
    return name, settings


def method_overrides(method: str, user: list[str]) -> list[str]:
    """The method's paper defaults, then the user's overrides, then the variant's own settings
    (later ones win, key by key)."""
    name, variant = parse_method(method)
    layers = [{_key(o): o for o in part} for part in (METHODS[name], user, variant)]
    return list({k: v for layer in layers for k, v in layer.items()}.values())


def check_user_overrides(user: list[str]) -> None:
    for item in user:
        key = _key(item)
        if key == "cache" or key.startswith("cache."):
            raise ValueError(
                f"'{item}': the bench sets each method's cache itself; choose methods with methods={','.join(METHODS)}"
            )


def resolve_methods(methods: list[str], user: list[str]) -> dict[str, RunConfig]:
    """One resolved config per method; every config is checked before any model loads."""
    if not methods:
        raise ValueError(f"methods= is empty; valid: {','.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods={','.join(methods)} lists a method twice")
    check_user_overrides(user)
    if not any(_key(o) == "dataset.limit" for o in user):
        user = [*user, f"dataset.limit={DEFAULT_LIMIT}"]
    cfgs = {m: resolve_config(method_overrides(m, user)) for m in methods}
    first = next(iter(cfgs.values()))
    for name, cfg in cfgs.items():
        if (cfg.model, cfg.dataset, cfg.batch_size) != (first.model, first.dataset, first.batch_size):
            raise ValueError(f"method {name} resolved to another model, dataset or batch size than the others")
    return cfgs


def with_length(user: list[str], length: int) -> list[str]:
    return [o for o in user if _key(o) != "generation.gen_length"] + [f"generation.gen_length={length}"]


def with_batch_size(user: list[str], batch_size: int) -> list[str]:
    return [o for o in user if _key(o) != "batch_size"] + [f"batch_size={batch_size}"]


def split_batch_sizes(user: list[str]) -> tuple[list[int] | None, list[str]]:
    """`batch_size=1,4,16` out of the overrides, as sorted distinct sizes (None when not given).

    The bench's batch_size= takes a list, where a run config takes one int, so it is read here."""
    given = [o for o in user if _key(o) == "batch_size"]
    if not given:
        return None, user
    if len(given) > 1:
        raise ValueError("'batch_size' is set more than once on the command line")
    sizes = parse_value("batch_size", given[0].split("=", 1)[1], list[int])
    if not sizes:
        raise ValueError("batch_size= lists no batch size")
    for n in sizes:
        if n < 1:
            raise ValueError(f"batch_size={n} must be >= 1")
    return sorted(set(sizes)), [o for o in user if _key(o) != "batch_size"]


def check_lengths(lengths: list[int] | None) -> list[int]:
    for n in lengths or []:
        if n < 1:
            raise ValueError(f"lengths=: {n} must be >= 1")
    return list(lengths or [])


# -- running ------------------------------------------------------------------------------------


def run_interleaved(
    model,
    task,
    samples: list,
    cfgs: dict[str, RunConfig],
    batch_sizes: list[int],
    on_progress: Callable[[str], None] | None = None,
) -> dict[int, dict[str, list[dict]]]:
    """Records per batch size and method, every one on the same samples.

    Per batch every method runs once, in turn. With several batch sizes the samples go in rounds
    of lcm(batch_sizes) samples, and in each round every batch size decodes the round's samples:
    the batch sizes take turns too, and as a round is a multiple of each batch size, each one gets
    the batches it would get alone. Each (batch size, method) pair warms up before its first batch."""
    import torch

    from .evaluation import run_samples

    records: dict[int, dict[str, list[dict]]] = {bs: {m: [] for m in cfgs} for bs in batch_sizes}
    round_size = math.lcm(*batch_sizes)
    for round_start in range(0, len(samples), round_size):
        in_round = samples[round_start : round_start + round_size]
        for batch_size in batch_sizes:
            for start in range(0, len(in_round), batch_size):
                chunk = in_round[start : start + batch_size]
                first = round_start == 0 and start == 0
                for method, cfg in cfgs.items():
                    if model.device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(model.device)
                    records[batch_size][method] += run_samples(
                        model, task, chunk, cfg.cache, cfg.generation, batch_size, warmup=first
                    )
                    if on_progress is not None:
                        on_progress(method)
    return records


def summary_rows(records: dict[str, list[dict]], cfgs: dict[str, RunConfig], batch_size: int) -> list[dict]:
    """One row per method: metrics.summarize plus the speedup over the baseline's generation time
    (the baseline at the same batch size)."""
    summaries = {method: metrics.summarize(recs) for method, recs in records.items()}
    base_seconds = summaries["baseline"]["generation_seconds"] if "baseline" in summaries else None
    rows = []
    for method, s in summaries.items():
        seconds = s["generation_seconds"]
        speedup = base_seconds / seconds if base_seconds and seconds else None
        rows.append({
            "method": method,
            "cache": cfgs[method].cache_name + ("-dual" if (cfgs[method].cache or {}).get("use_dual") else ""),
            "gen_length": cfgs[method].generation["gen_length"],
            "batch_size": batch_size,
            **s,
            "speedup": speedup,
        })
    return rows


def add_vs_batch1(rows: list[dict]) -> None:
    """vs_batch1: a row's tokens/s over the same method's at the smallest batch size (in place)."""
    smallest = min(r["batch_size"] for r in rows)
    base = {r["method"]: r["tokens_per_second"] for r in rows if r["batch_size"] == smallest}
    for r in rows:
        tps, ref = r["tokens_per_second"], base.get(r["method"])
        r["vs_batch1"] = tps / ref if tps is not None and ref else None


# -- output ---------------------------------------------------------------------------------------


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "int":
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


TABLE = (
    ("method", "method", "str"), ("acc %", "accuracy", "pct"), ("tok/s", "tokens_per_second", "num"),
    ("speedup", "speedup", "x"), ("latency s", "latency_seconds", "num"), ("NFE", "nfe", "num"),
    ("tok/fwd", "tokens_per_forward", "num"), ("refresh", "refresh_fraction", "num"), ("peak MB", "peak_memory_mb", "int"),
)


def table_columns(batch_sizes: list[int]) -> tuple[tuple[str, str, str], ...]:
    """TABLE, with a batch column and the vs-smallest-batch ratio when several batch sizes ran."""
    if len(batch_sizes) < 2:
        return TABLE
    return (TABLE[0], ("batch", "batch_size", "int"), *TABLE[1:4], (f"vs bs{min(batch_sizes)}", "vs_batch1", "x"), *TABLE[4:])


def format_table(rows: list[dict], header: str, columns: tuple[tuple[str, str, str], ...] = TABLE) -> str:
    cells = [[h for h, _, _ in columns]]
    for r in rows:
        cells.append([str(r[k]) if kind == "str" else _cell(r.get(k), kind) for _, k, kind in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [header]
    for j, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def header_text(cfg: RunConfig, n: int, info: dict, batch_sizes: list[int] | None = None) -> str:
    gen = cfg.generation
    canvas = (
        "full canvas decoded (stop_until_eos=false, as the papers measure)"
        if not gen.get("stop_until_eos")
        else "each sequence stops at its answer's end (stop_until_eos=true)"
    )
    return (
        f"unmask bench: model={cfg.model['name']} dtype={cfg.model['dtype']} task={cfg.dataset['name']} samples={n} "
        f"batch_size={','.join(map(str, batch_sizes or [cfg.batch_size]))} gen_length={gen['gen_length']} block_length={gen['block_length']}; {canvas}\n"
        f"machine: {info['cpu']} ({info['cpu_count']} CPUs, torch {info['torch']}, {info['torch_threads']} threads"
        f"{', ' + info['gpu'] if 'gpu' in info else ''}{', freed memory kept' if info.get('keep_freed_memory') else ''}); "
        "speedup = baseline seconds / method seconds"
        + (" at the same batch size" if batch_sizes and len(batch_sizes) > 1 else "") + "; "
        + ("peak MB = CUDA max allocated per method" if str(info.get("device", "cpu")).startswith("cuda")
           else "peak MB = process peak RSS (grows over the run, not per method)")
    )


def write_csv(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})


def default_output_dir(cfg: RunConfig) -> str:
    model = str(cfg.model["name"]).replace(os.sep, "_")
    name = f"{cfg.dataset['name']}-{model}-{cfg.model['dtype']}-gen{cfg.generation['gen_length']}"
    return str(Path("outputs") / "bench" / name)


# -- the command ------------------------------------------------------------------------------------


def run_bench(
    user: list[str],
    methods: list[str] | None = None,
    lengths: list[int] | None = None,
    trace: bool = True,
    trace_methods: list[str] | None = None,
    show_progress: bool = True,
    command: str | None = None,
    batch_sizes: list[int] | None = None,
) -> dict:
    """Run the bench and write its files; returns what results.json holds.

    `user` are the eval-style overrides; `command` is recorded in results.json as given.
    `batch_sizes` (sorted, distinct; default: the run config's batch_size) each run every method
    at every length; `records` and `configs` are the smallest batch size's, and with several
    batch sizes `records_by_batch_size` holds them all."""
    import torch
    from tqdm import tqdm

    from . import plots
    from .evaluation import sample_images, task_samples
    from .generate import generate

    methods = list(methods or METHODS)
    command_user = user
    if batch_sizes is not None:
        if any(_key(o) == "batch_size" for o in user):
            raise ValueError("batch_size= is given both as an override and as batch_sizes")
        user = with_batch_size(user, min(batch_sizes))
    cfgs = resolve_methods(methods, user)
    first = next(iter(cfgs.values()))
    main_length = int(first.generation["gen_length"])
    batch_sizes = sorted(set(batch_sizes or [first.batch_size]))
    lengths = sorted(set(lengths or [main_length]))
    per_length = {main_length: cfgs}
    for length in lengths:
        if length != main_length:
            per_length[length] = resolve_methods(methods, with_length(user, length))
    if not trace_methods:  # default: two cache methods (their refresh patterns differ), else whatever runs
        cached = [m for m in methods if cfgs[m].cache is not None]
        trace_methods = (cached + [m for m in methods if m not in cached])[:2]
    unknown = [m for m in trace_methods if m not in cfgs]
    if trace and unknown:
        raise ValueError(f"trace_methods={','.join(trace_methods)}: {unknown} not among methods={','.join(methods)}")

    task, samples = task_samples(first)
    require_model_path(first)
    kept = keep_freed_memory()  # steady step times: no page faults from re-mapping freed temporaries
    if not samples:
        raise ValueError(f"dataset.name={first.dataset['name']} has no samples")
    torch.manual_seed(first.seed)
    model = load_model(first, device=resolve_device(first.model["device"]))
    too_long = [length for length in lengths if length >= model.cfg.max_position]
    if too_long:
        raise ValueError(f"lengths {too_long} do not fit the model's maximum length of {model.cfg.max_position} positions")

    info = {**machine(), "device": str(model.device), "keep_freed_memory": kept}
    out = Path(first.output_dir or default_output_dir(first))
    out.mkdir(parents=True, exist_ok=True)
    batches = sum(-(-len(samples) // bs) for bs in batch_sizes)
    total = batches * len(methods) * len(per_length)
    bar = tqdm(total=total, desc="unmask bench", disable=not show_progress, file=sys.stderr)

    results: dict[int, dict[int, dict[str, list[dict]]]] = {}  # length -> batch size -> method -> records
    for length in per_length:  # the main length first
        bar.set_description(f"unmask bench gen_length={length}")

        def progress(method: str) -> None:
            bar.set_postfix(done=method, refresh=False)
            bar.update(1)

        results[length] = run_interleaved(model, task, samples, per_length[length], batch_sizes, progress)
    bar.close()

    smallest = batch_sizes[0]
    rows = [r for bs in batch_sizes for r in summary_rows(results[main_length][bs], cfgs, bs)]
    if len(batch_sizes) > 1:
        add_vs_batch1(rows)
    first_rows = [r for r in rows if r["batch_size"] == smallest]  # the plots' rows
    speedups = {m: {} for m in methods}
    for length, by_batch in results.items():
        for r in summary_rows(by_batch[smallest], per_length[length], smallest):
            speedups[r["method"]][length] = r["speedup"]
    header = header_text(first, len(samples), info, batch_sizes)
    table = format_table(rows, header, table_columns(batch_sizes))
    print(table)

    write_csv(rows, out / "results.csv")
    label = f"{first.model['name']} {first.model['dtype']}, {first.dataset['name']} x{len(samples)}"
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}  # one color per method in every plot
    if len(batch_sizes) > 1:
        label += f", batch_size {smallest}"
    plots.pareto(first_rows, out / "pareto.png", title=f"accuracy vs tokens/s ({label}, gen_length {main_length})", colors=colors)
    plots.speedup_vs_length(
        {m: s for m, s in speedups.items() if m != "baseline"}, out / "speedup_vs_length.png",
        title=f"speedup over baseline ({label})", colors=colors,
    )
    traced = {}
    if trace:
        for m in trace_methods:
            cfg = cfgs[m]
            r = generate(model, prompts=[samples[0].prompt], images=sample_images(samples[:1]), cache=cfg.cache, trace=True,
                         **cfg.generation)
            traced[m] = r.trace
            canvas_rows = len(r.prompt_ids[0]) + main_length
        title = f"decode trace, sample {samples[0].id}"
        plots.decode_trace(traced, main_length, canvas_rows, out / "trace.png", title=title, colors=colors)
    payload = {
        "header": header,
        "machine": info,
        "command": command or "unmask bench " + " ".join(
            _command_parts(methods, lengths, trace, trace_methods, command_user, batch_sizes)
        ),
        "batch_sizes": batch_sizes,
        "methods": rows,
        "speedup_vs_length": {m: {str(k): v for k, v in s.items()} for m, s in speedups.items()},
        "trace_methods": list(traced),
        "configs": {m: cfg.to_dict() for m, cfg in cfgs.items()},
        "records": {str(length): by_batch[smallest] for length, by_batch in results.items()},
        **({"records_by_batch_size": {
            str(bs): {str(length): by_batch[bs] for length, by_batch in results.items()} for bs in batch_sizes
        }} if len(batch_sizes) > 1 else {}),
        "output_dir": str(out),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"wrote {out}/results.csv, results.json, pareto.png, speedup_vs_length.png{', trace.png' if trace else ''}")
    return payload


def _command_parts(methods, lengths, trace, trace_methods, user, batch_sizes) -> list[str]:
    return [f"methods={','.join(methods)}", f"lengths={','.join(map(str, lengths))}",
            f"batch_size={','.join(map(str, batch_sizes))}", f"trace={str(trace).lower()}",
            *([f"trace_methods={','.join(trace_methods)}"] if trace else []),
            *[o for o in user if _key(o) != "batch_size"]]


def main(argv: list[str] | None = None) -> int:
    """`unmask bench`: 0 on success, 2 on a configuration error (message on stderr)."""
    return command_main("bench", USAGE, argv, _bench)


def check_mode(own: dict[str, Any]) -> str:
    """The mode= choice, and no own key of the other mode (it would be silently ignored)."""
    mode = own.get("mode", "methods")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; valid choices: {list(MODES)}")
    for other, keys in MODES.items():
        stray = [k for k in keys if k in own and other != mode]
        if stray:
            raise ValueError(f"{stray[0]}= belongs to mode={other}, not mode={mode}")
    return mode


def _bench(argv: list[str]) -> int:
    own, rest = split_overrides(argv, OWN_KEYS)
    mode = check_mode(own)
    if "threads" in own:
        import torch

        if own["threads"] < 1:
            raise ValueError(f"threads={own['threads']} must be >= 1")
        torch.set_num_threads(own["threads"])
    if mode == "engine":
        from .engine_bench import run_engine_bench

        sizes, _ = split_batch_sizes(rest)
        if sizes is not None and len(sizes) > 1:
            raise ValueError("batch_size= takes one value in mode=engine (the forward's batch), not a list")

        keep_freed_memory()  # as for mode=methods: steady step times
        run_engine_bench(
            rest, repeat=own.get("repeat", 7), runs=own.get("runs", 3), cprofile=own.get("cprofile", False),
            command="unmask bench " + " ".join(argv),
        )
        return 0
    if mode == "serve":
        from .serve_bench import run_serve_bench

        run_serve_bench(
            rest, clients=own.get("clients", [1, 4, 16, 64]), requests=own.get("requests", 8),
            rate=own.get("rate", 10.0), threads=own.get("threads"), command="unmask bench " + " ".join(argv),
            server=own.get("server", "subprocess"),
        )
        return 0
    batch_sizes, rest = split_batch_sizes(rest)  # mode=engine reads batch_size= as the forward's batch
    run_bench(
        rest,
        batch_sizes=batch_sizes,
        methods=own.get("methods"),
        lengths=check_lengths(own.get("lengths")),
        trace=own.get("trace", True),
        trace_methods=own.get("trace_methods"),
        command="unmask bench " + " ".join(argv),
    )
    return 0
