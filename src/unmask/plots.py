"""Pictures for `unmask bench`: the accuracy/speed Pareto plot, speedup against generation length,
and a decode trace (when each position was committed, which layers each step recomputed).

Figures are built on matplotlib's object API with the Agg canvas, never pyplot, so plotting keeps
no global state and needs no display.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from .generate import StepTrace


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def pareto(rows: Sequence[dict], path: str | Path, title: str = "", colors: dict[str, str] | None = None) -> Path:
    """Accuracy (%) against tokens/s (log scale), one point per method, named in a legend below.

    A legend rather than labels beside the points: methods often share a spot (same accuracy,
    similar speed) and variant names are long, so in-plot labels collide.
    `rows` carry `method`, `accuracy` (0..1) and `tokens_per_second`; rows without a speed are skipped.
    `colors` (method -> matplotlib color) keeps a method's color the same across plots.
    """
    points = [r for r in rows if r.get("tokens_per_second") and r.get("accuracy") is not None]
    fig = Figure(figsize=(6.4, 4.4 + 0.2 * len(points)))
    ax = fig.add_subplot()
    markers = "osD^v<>ph*"
    for i, r in enumerate(points):
        x, y = float(r["tokens_per_second"]), 100 * float(r["accuracy"])
        color = (colors or {}).get(r["method"], f"C{i % 10}")
        speed = f"{x:.3g}" if x < 1000 else f"{x:,.0f}"
        label = f"{r['method']} ({y:.0f} %, {speed} tok/s)"
        ax.scatter([x], [y], s=46, color=color, marker=markers[i % len(markers)], zorder=3, label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("tokens / s (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    if points:
        xs = [float(r["tokens_per_second"]) for r in points]
        ys = [100 * float(r["accuracy"]) for r in points]
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        ax.set_ylim(max(0.0, min(ys) - 5), min(100.0, max(ys) + 5) if max(ys) + 5 > 10 else 10.0)
    ax.set_title(title or "accuracy vs speed", fontsize=10)
    if points:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False, ncol=1)
    return _save(fig, path)


def speedup_vs_length(
    series: dict[str, dict[int, float | None]], path: str | Path, title: str = "", colors: dict[str, str] | None = None
) -> Path:
    """Speedup over the baseline per method (one line each) against generation length."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    lengths = sorted({int(length) for points in series.values() for length in points})
    for i, (method, points) in enumerate(series.items()):
        pairs = sorted((int(k), float(v)) for k, v in points.items() if v is not None and math.isfinite(float(v)))
        if not pairs:
            continue
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], marker="o", color=(colors or {}).get(method, f"C{i % 10}"), label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths or [1])
    ax.set_xticklabels([str(length) for length in lengths] or [""])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("generation length (tokens)")
    ax.set_ylabel("speedup over baseline (x, log scale)")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.grid(True, which="both", alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    ax.set_title(title or "speedup vs generation length", fontsize=10)
    return _save(fig, path)


def decode_trace(
    traces: dict[str, list[StepTrace]], gen_length: int, canvas_rows: int, path: str | Path, title: str = "",
    colors: dict[str, str] | None = None,
) -> Path:
    """For one sample, per method side by side: the commit order and the per-layer recompute pattern.

    Top: each committed position (y, generation offset) at the step (x) that committed it.
    Bottom: per step (x) and layer (y), the share of canvas rows the layer recomputed
    (`layer_rows / canvas_rows`); layers that refreshed every row are the brightest cells.
    `traces` maps a method name to `GenerationResult.trace` (sequence 0 is drawn).
    """
    import numpy as np

    names = list(traces)
    fig = Figure(figsize=(5.2 * max(1, len(names)), 7.2))
    axes = fig.subplots(2, max(1, len(names)), squeeze=False, gridspec_kw={"height_ratios": [3, 1.4]})
    image = None
    for col, name in enumerate(names):
        steps = traces[name]
        xs = [i for i, s in enumerate(steps) for _ in s.committed[0]]
        ys = [off for s in steps for off in s.committed[0]]
        top, bottom = axes[0][col], axes[1][col]
        top.scatter(xs, ys, s=6, color=(colors or {}).get(name, f"C{col}"))
        top.set_ylim(-1, gen_length)
        top.invert_yaxis()
        top.set_xlim(-0.5, max(1, len(steps)) - 0.5)
        top.set_title(f"{name}: {len(steps)} steps", fontsize=10)
        top.set_ylabel("generated position")
        top.grid(True, alpha=0.3)
        layers = len(steps[0].layer_rows) if steps else 1
        share = np.zeros((layers, max(1, len(steps))))
        for i, s in enumerate(steps):
            for layer, rows in enumerate(s.layer_rows):
                share[layer, i] = min(1.0, rows / max(1, canvas_rows))
        image = bottom.imshow(share, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
        refreshed = [sum(s.refreshed) / max(1, len(s.refreshed)) for s in steps]
        fraction = sum(refreshed) / len(refreshed) if refreshed else 0.0
        bottom.set_xlabel(f"denoising step  (refresh fraction {fraction:.2f})")
        bottom.set_ylabel("layer")
        bottom.set_xlim(top.get_xlim())
    if image is not None:
        fig.colorbar(image, ax=[axes[1][c] for c in range(len(names))], label="rows recomputed (share)", shrink=0.9)
    fig.suptitle(title or "decode trace", fontsize=11)
    return _save(fig, path)


def serve_load(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """`unmask bench mode=serve`: requests/s (left) and p99 latency (right) against concurrent clients,
    one line with continuous batching and one without. `rows` carry clients, continuous,
    requests_per_s and p99_s."""
    fig = Figure(figsize=(10.4, 4.2))
    left, right = fig.subplots(1, 2)
    clients = sorted({int(r["clients"]) for r in rows})
    for i, flag in enumerate((True, False)):
        points = sorted((int(r["clients"]), r) for r in rows if bool(r["continuous"]) == flag)
        if not points:
            continue
        label = "continuous batching" if flag else "whole batches (continuous=false)"
        style = {"marker": "o" if flag else "s", "color": f"C{i}", "label": label}
        left.plot([n for n, _ in points], [float(r["requests_per_s"]) for _, r in points], **style)
        right.plot([n for n, _ in points], [float(r["p99_s"]) for _, r in points], **style)
    for ax, ylabel in ((left, "requests / s"), (right, "p99 latency (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients or [1])
        ax.set_xticklabels([str(n) for n in clients] or [""])
        ax.minorticks_off()
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    left.set_title("throughput", fontsize=10)
    right.set_title("tail latency", fontsize=10)
    fig.suptitle(title or "serving under load", fontsize=11)
    return _save(fig, path)
