"""One definition of every reported number, shared by `unmask eval` and `unmask bench`
(algorithms.md section 6), computed from per-sample records so a resumed run and an
uninterrupted one summarize the same way.

A record (see `unmask.evaluation.run_samples`) carries, per sample: `correct`, `tokens` (answer
tokens before the first EOS/EOT), `nfe`, `seconds` (wall time until that sample finished inside
its batch), `batch` (the id of the batch's first sample), `batch_seconds` (wall time of the
whole batch's generation, warm-up excluded), `refresh_fraction`, `row_fraction` and
`peak_memory_mb`.
"""

from __future__ import annotations

import math
import resource
import sys
from typing import Any

SUMMARY_FIELDS = (
    "samples",
    "accuracy",
    "tokens_per_second",
    "latency_seconds",
    "nfe",
    "tokens_per_forward",
    "answer_tokens",
    "generation_seconds",
    "peak_memory_mb",
    "refresh_fraction",
    "row_fraction",
)


def peak_memory_mb(device: Any = None) -> float:
    """CUDA's max allocated memory on a cuda device, else the process's peak resident set size."""
    import torch

    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _batches(records: list[dict]) -> dict[str, dict]:
    """One entry per generate call: batch-level numbers appear once however many samples it held."""
    out: dict[str, dict] = {}
    for r in records:
        out.setdefault(r["batch"], r)
    return out


def summarize(records: list[dict]) -> dict:
    """Accuracy and speed over records.

    - accuracy: share of records with `correct`.
    - tokens_per_second: all answer tokens / all generation wall time, where a batch's wall time
      counts once (so it is per-process throughput, comparable across methods and batch sizes).
    - latency_seconds: mean per-sample `seconds`.
    - nfe: mean forward calls per sample; tokens_per_forward: answer tokens / forward calls.
    - peak_memory_mb: max over records; refresh/row fraction: mean over batches.
    """
    n = len(records)
    if n == 0:
        return {key: (0 if key == "samples" else None) for key in SUMMARY_FIELDS}
    batches = _batches(records)
    tokens = sum(int(r["tokens"]) for r in records)
    nfe = sum(int(r["nfe"]) for r in records)
    wall = sum(float(b["batch_seconds"]) for b in batches.values())
    return {
        "samples": n,
        "accuracy": sum(bool(r["correct"]) for r in records) / n,
        "tokens_per_second": tokens / wall if wall > 0 else None,
        "latency_seconds": sum(float(r["seconds"]) for r in records) / n,
        "nfe": nfe / n,
        "tokens_per_forward": tokens / nfe if nfe else None,
        "answer_tokens": tokens,
        "generation_seconds": wall,
        "peak_memory_mb": max(float(r["peak_memory_mb"]) for r in records),
        "refresh_fraction": _mean(b.get("refresh_fraction") for b in batches.values()),
        "row_fraction": _mean(b.get("row_fraction") for b in batches.values()),
    }


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def progress_postfix(records: list[dict]) -> dict[str, str]:
    """Running accuracy and tokens/s for the progress bar."""
    s = summarize(records)
    acc = "-" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"
    tps = "-" if s["tokens_per_second"] is None else f"{s['tokens_per_second']:.1f}"
    return {"acc": acc, "tok/s": tps}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def format_table(summary: dict, title: str | None = None) -> str:
    """A two-column plain-text table of a summary (accuracy shown in percent)."""
    rows = []
    for key, value in summary.items():
        if isinstance(value, (dict, list)):
            continue
        if key == "accuracy" and value is not None:
            rows.append(("accuracy (%)", f"{100 * value:.2f}"))
        else:
            rows.append((key, _fmt(value)))
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    if title:
        vwidth = max(vwidth, len(title) - width - 3)
    line = "+" + "-" * (width + 2) + "+" + "-" * (vwidth + 2) + "+"
    out = [line]
    if title:
        out += [f"| {title.ljust(width + vwidth + 3)} |", line]
    out += [f"| {k.ljust(width)} | {v.rjust(vwidth)} |" for k, v in rows]
    out.append(line)
    return "\n".join(out)
