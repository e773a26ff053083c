"""The evaluation runner behind `unmask eval` and `accelerate launch eval.py ...`.

It resolves the config (all checks before any model loads), shards the pending samples over
accelerate's processes (a plain `python eval.py` is one process), decodes them in batches with
`unmask.generate`, scores them with the task, appends one record per sample, and lets process 0
merge the records and write the summary once, after a barrier. Restarting with the same output
directory skips every sample already recorded.
"""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path
from typing import Callable

from . import metrics, records
from .config import RunConfig, command_main, load_model, require_model_path, resolve_config, resolve_device
from .tasks.base import Sample, Task
from .tasks.prompting import cut_at_stops

USAGE = """usage: unmask eval [key=value ...]   (also: python eval.py ..., accelerate launch eval.py ...)

Hydra-style overrides, e.g.
  dataset.name=arith dataset.limit=20 batch_size=1 seed=1234 model=tiny
  cache=prefix cache.use_dual=true generation=vanilla generation.gen_length=256 generation.threshold=0.9
  model=llada-inst model.path=/data/LLaDA-8B-Instruct attn_implementation=eager output_dir=runs/x
Groups: model=(tiny|llada-base|llada-inst|llada-1.5|dream-base|dream-inst), cache=(null|prefix|dllm|d2cache|elastic),
generation=vanilla. Code-running tasks need allow_code_execution=true or UNMASK_ALLOW_CODE_EXECUTION=1.
harness=lm-eval (gsm8k, humaneval, mbpp, math-500): lm-evaluation-harness's task definitions render and score."""


# -- reusable pieces (also used by `unmask bench`) -------------------------------------------


def sample_images(samples) -> list[list] | None:
    """The samples' images for generate (None when no sample has any: text tasks pass nothing)."""
    images = [list(getattr(s, "images", ())) for s in samples]
    return images if any(images) else None


def batch_seed(seed: int | None, first_id: str) -> int | None:
    """A batch's generator seed from the run seed and its first sample id, so a sample's result
    does not depend on the process or resume order that reached it."""
    if seed is None:
        return None
    return (int(seed) + zlib.crc32(first_id.encode())) % 2**31


def run_samples(
    model,
    task: Task,
    samples: list[Sample],
    cache: dict | str | None = None,
    generation: dict | None = None,
    batch_size: int = 1,
    *,
    warmup: bool = True,
    on_record: Callable[[dict], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> list[dict]:
    """Decode and score `samples` in order, `batch_size` prompts per `unmask.generate` call.

    `generation` is the keyword arguments of unmask.generate (RunConfig.generation); its `seed`
    is turned into a per-batch seed (`batch_seed`). With `warmup`, one untimed generate on the
    first prompt runs first. Returns one record per sample (keys: id, prompt, output,
    raw_output, extracted, correct, detail, tokens, nfe, seconds, batch, batch_size,
    batch_seconds, refresh_fraction, row_fraction, peak_memory_mb); `on_record` sees each
    record as soon as it exists, `on_phase` hears "warm-up" before the warm-up and "decode" when
    the timed samples start. `metrics.summarize` turns the records into the reported numbers.
    """
    from .generate import generate

    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    generation = dict(generation or {})
    seed = generation.pop("seed", None)
    stops = task.stop_strings()
    out: list[dict] = []
    if warmup and samples:
        if on_phase is not None:
            on_phase("warm-up")
        generate(model, prompts=[samples[0].prompt], images=sample_images(samples[:1]), cache=cache, seed=seed, **generation)
    if on_phase is not None:
        on_phase("decode")
    for start in range(0, len(samples), batch_size):
        batch = samples[start : start + batch_size]
        result = generate(
            model, prompts=[s.prompt for s in batch], images=sample_images(batch), cache=cache,
            seed=batch_seed(seed, batch[0].id), **generation,
        )
        peak = metrics.peak_memory_mb(model.device)
        for i, sample in enumerate(batch):
            raw = result.texts[i]
            text = cut_at_stops(raw, stops)
            score = task.score(sample, text)
            rec = {
                "id": sample.id,
                "prompt": sample.prompt,
                "output": text,
                "raw_output": raw,
                "extracted": score.extracted,
                "correct": bool(score.correct),
                "detail": score.detail,
                **({"metrics": score.metrics} if score.metrics else {}),
                "tokens": int(result.answer_tokens[i]),
                "nfe": int(result.nfe[i]),
                "seconds": float(result.seconds[i]),
                "batch": batch[0].id,
                "batch_size": len(batch),
                "batch_seconds": float(result.total_seconds),
                "refresh_fraction": float(result.refresh_fraction),
                "row_fraction": float(result.row_fraction),
                "peak_memory_mb": peak,
            }
            out.append(rec)
            if on_record is not None:
                on_record(rec)
    return out


def check_code_execution(cfg: RunConfig, task_cls: type[Task]) -> None:
    """Refuse tasks that run generated code unless the user opted in (flag or environment)."""
    if not task_cls.executes_code:
        return
    from .tasks.sandbox import CodeExecutionNotAllowed, require_opt_in

    try:
        require_opt_in(cfg.allow_code_execution)
    except CodeExecutionNotAllowed as exc:
        raise ValueError(f"dataset.name={cfg.dataset['name']}: {exc}") from None


def select_samples(task: Task, limit: int | None) -> list[Sample]:
    samples = task.load()
    if limit is not None:
        samples = samples[:limit]
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError(f"dataset.name={task.name}: sample ids are not unique, so records cannot key on them")
    return samples


def task_samples(cfg: RunConfig) -> tuple[Task, list[Sample]]:
    """The run's task (unmask's own, or lm-eval's definition with harness=lm-eval) and its first
    `dataset.limit` samples (what eval, bench and scripts decode); a task that runs generated
    code needs the opt-in first."""
    from .lmeval.harness import make_task, task_class

    data = cfg.dataset
    check_code_execution(cfg, task_class(data["name"], cfg.harness))
    task = make_task(
        data["name"], cfg.harness, n_shot=data["n_shot"], path=data["path"], split=data["split"],
        allow_code_execution=cfg.allow_code_execution,
    )
    return task, select_samples(task, data["limit"])


# -- the runner ---------------------------------------------------------------------------------


def evaluate(cfg: RunConfig, *, show_progress: bool = True) -> dict | None:
    """Run one evaluation; returns the summary on process 0 (None on the others)."""
    import torch
    from accelerate import PartialState
    from tqdm import tqdm

    from .models.checkpoint import fingerprint, resolve_path

    task, samples = task_samples(cfg)
    checkpoint = resolve_path(require_model_path(cfg))  # fails before any process group forms
    device = resolve_device(cfg.model["device"])
    # cpu=True lets a torchrun-style launch without GPUs form a gloo (MULTI_CPU) group.
    state = PartialState(cpu=torch.device(device).type == "cpu")
    rank, world = state.process_index, state.num_processes
    _warn_single_cpu_launch(world)
    config = cfg.to_dict()
    # The weights' content is part of the config: records of another checkpoint under the same name are not resumed.
    config["model"] = {**config["model"], "fingerprint": fingerprint(checkpoint)}
    if cfg.output_dir is None:
        cfg.output_dir = config["output_dir"] = records.default_output_dir(config)
    out = Path(cfg.output_dir)
    resuming = records.check_config(out, config)  # every process checks, so all fail alike
    records.read_records(out)  # a bad record line stops every process, before any file is rewritten
    state.wait_for_everyone()
    order = [s.id for s in samples]
    if state.is_main_process:
        if not resuming:
            records.write_config(out, config)
        records.consolidate(out, order)
    state.wait_for_everyone()

    done = records.read_records(out)
    records.check_prompts(out, done, samples)
    pending = [s for s in samples if s.id not in done]
    mine = pending[rank::world]
    if state.is_main_process:
        print(
            f"unmask eval: {len(samples)} samples of {cfg.dataset['name']}, {len(samples) - len(pending)} already done, "
            f"{len(pending)} to run on {world} process(es); records in {out}",
            file=sys.stderr,
        )
    if mine:
        name = cfg.dataset["name"]
        # The bar says what the minutes before the first sample are spent on (loading, the untimed warm-up).
        bar = tqdm(total=len(mine), desc=f"{name}: loading the model", disable=not (show_progress and state.is_main_process))
        torch.manual_seed(cfg.seed)
        model = load_model(cfg, device=device)
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(model.device)
        new: list[dict] = []

        def on_phase(phase: str) -> None:
            bar.set_description(f"{name}: warming up (one untimed generate)" if phase == "warm-up" else name)
        with records.RecordWriter(records.rank_file(out, rank, world)) as writer:

            def on_record(rec: dict) -> None:
                rec["rank"] = rank
                writer.write(rec)
                new.append(rec)
                bar.update(1)
                bar.set_postfix(metrics.progress_postfix(new), refresh=False)

            run_samples(model, task, mine, cfg.cache, cfg.generation, cfg.batch_size, on_record=on_record, on_phase=on_phase)
        bar.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    merged = records.consolidate(out, order)
    missing = [sid for sid in order if sid not in merged]
    if missing:
        raise RuntimeError(f"{len(missing)} samples have no record after the run (first: {missing[:3]})")
    from .lmeval.harness import metric_means

    summary = {
        "task": cfg.dataset["name"],
        "model": cfg.model["name"],
        "cache": cfg.cache_name,
        **metrics.summarize([merged[sid] for sid in order]),
        "num_processes": world,
        "output_dir": str(out),
    }
    if lm_eval_metrics := metric_means([merged[sid] for sid in order]):
        summary["lm_eval"] = lm_eval_metrics  # e.g. strict-match/exact_match and flexible-extract/exact_match
    records.write_summary(out, summary)
    print(metrics.format_table(summary, title=f"unmask eval: {summary['task']} / {summary['model']} / {summary['cache']}"))
    return summary


def _warn_single_cpu_launch(world: int) -> None:
    """Without GPUs, `accelerate launch --num_processes N` (with or without --cpu) starts ONE
    process unless it is given an MPI hostfile; say so instead of silently running unsharded.

    accelerate does not pass the requested count on, so the note appears for any single-process
    accelerate launch on a machine without CUDA (its simple launcher sets ACCELERATE_USE_CPU)."""
    import torch

    launched = "ACCELERATE_USE_CPU" in os.environ and "WORLD_SIZE" not in os.environ
    if world == 1 and launched and not torch.cuda.is_available():
        print(
            "unmask eval: note: accelerate started a single process (without GPUs it needs "
            "--mpirun_hostfile for several); for CPU data parallel (gloo) use "
            "CUDA_VISIBLE_DEVICES= accelerate launch --multi_gpu --num_processes N eval.py ...",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    """`unmask eval` / `eval.py`: 0 on success, 2 on a configuration error (message on stderr)."""

    def run(words: list[str]) -> int:
        evaluate(resolve_config(words))
        return 0

    return command_main("eval", USAGE, argv, run)
