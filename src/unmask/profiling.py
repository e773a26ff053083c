"""Measuring tools of `unmask bench mode=engine`: matmul peak, FLOP counts, matmul-only replay, per-step times.

The "matrix-multiply time" of a piece of work is measured by recording every matmul-like call it
makes (linear, mm, bmm, attention) and replaying exactly those shapes alone, on fresh tensors,
in a tight loop. Attention is replayed as its two batched products (QK^T and PV), so the softmax
counts as overhead, not as matrix work.
"""

from __future__ import annotations

import cProfile
import pstats
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .bench_allocator import keep_freed_memory
from .engine.loop import DenoisingLoop
from .generate import generate
from .models.tokenizer import encode_prompts

aten = torch.ops.aten


def best_seconds(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Best-of-`repeat` wall time of `number` calls (minimum: least disturbed by other load)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def matmul_peak(dtype: torch.dtype, n: int = 1024, repeat: int = 5) -> float:
    """FLOP/s of a large square matmul: the machine's matrix-multiply throughput in this dtype."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    with torch.inference_mode():
        seconds = best_seconds(lambda: torch.mm(a, b), repeat=repeat, number=3)
    return 2 * n**3 / seconds


def count_flops(fn: Callable[[], object]) -> int:
    """Matrix-multiply FLOPs of one call: 2*M*N*K over every recorded matmul, attention's two included.

    (torch's FlopCounterMode misses the CPU flash-attention kernel, so it is only a cross-check.)
    """
    return sum(c.flops for c in record_matmuls(fn))


@dataclass(frozen=True)
class MatmulCall:
    kind: str  # "mm" (2-D @ 2-D) or "bmm" (batched)
    a: tuple[int, ...]
    b: tuple[int, ...]
    dtype: torch.dtype

    @property
    def flops(self) -> int:
        batch = self.a[0] if self.kind == "bmm" else 1
        m, k, n = self.a[-2], self.a[-1], self.b[-1]
        return 2 * batch * m * k * n


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[MatmulCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet is aten.linear:
            x, w = args[0], args[1]
            rows = x.numel() // x.shape[-1]
            self.calls.append(MatmulCall("mm", (rows, x.shape[-1]), (w.shape[1], w.shape[0]), x.dtype))
        elif packet in (aten.mm, aten.addmm):
            a, b = (args[1], args[2]) if packet is aten.addmm else (args[0], args[1])
            self.calls.append(MatmulCall("mm", tuple(a.shape), tuple(b.shape), a.dtype))
        elif packet in (aten.bmm, aten.baddbmm):
            a, b = (args[1], args[2]) if packet is aten.baddbmm else (args[0], args[1])
            self.calls.append(MatmulCall("bmm", tuple(a.shape), tuple(b.shape), a.dtype))
        elif "scaled_dot_product" in packet.__name__:
            q, k = args[0], args[1]
            bq, hq, r, d = q.shape
            t = k.shape[-2]
            self.calls.append(MatmulCall("bmm", (bq * hq, r, d), (bq * hq, d, t), q.dtype))
            self.calls.append(MatmulCall("bmm", (bq * hq, r, t), (bq * hq, t, d), q.dtype))
        return func(*args, **kwargs)


def record_matmuls(fn: Callable[[], object]) -> list[MatmulCall]:
    recorder = _Recorder()
    with recorder:
        fn()
    return recorder.calls


def replay_seconds(calls: list[MatmulCall], repeat: int = 7) -> float:
    """Time of the recorded matmuls alone (fresh operands, outputs preallocated)."""
    ops = []
    for c in calls:
        a, b = torch.randn(c.a).to(c.dtype), torch.randn(c.b).to(c.dtype)
        if c.kind == "mm":
            out = torch.empty(c.a[0], c.b[1], dtype=c.dtype)
            ops.append((torch.mm, a, b, out))
        else:
            out = torch.empty(c.a[0], c.a[1], c.b[2], dtype=c.dtype)
            ops.append((torch.bmm, a, b, out))

    def run() -> None:
        for op, a, b, out in ops:
            op(a, b, out=out)

    with torch.inference_mode():
        return best_seconds(run, repeat=repeat, number=5)


@dataclass
class StepTiming:
    block_step: int
    seconds: float


def _generate_with_step(make_step: Callable, model, prompt_ids: list[list[int]], cache, runs: int = 1, **options) -> None:
    """Run generate `runs` times with the loop's `_step` replaced by `make_step(original)`.

    Wraps the step from outside (a profiling aid; the library is not changed for it).
    """
    original = DenoisingLoop._step
    DenoisingLoop._step = make_step(original)
    try:
        for _ in range(runs):
            generate(model, input_ids=prompt_ids, cache=cache, **options)
    finally:
        DenoisingLoop._step = original


def step_times(model, prompt_ids: list[list[int]], cache, **options) -> list[StepTiming]:
    """Wall time of every denoising step of one generate call, from one step's start to the next's."""
    marks: list[tuple[float, int]] = []

    def timed(original):
        def step(self, ctx):
            marks.append((time.perf_counter(), ctx.block_step))
            return original(self, ctx)
        return step

    _generate_with_step(timed, model, prompt_ids, cache, **options)
    # Step i lasts until step i + 1 starts (so policy events and stop checks count); the last step,
    # whose end would include building the result, is left out.
    return [
        StepTiming(block_step, marks[i + 1][0] - t0)
        for i, (t0, block_step) in enumerate(marks[:-1])
    ]


def profile_cached_steps(model, prompt_ids: list[list[int]], cache, runs: int = 10, **options) -> pstats.Stats:
    """cProfile of the cached steps only (block_step > 0) of `runs` generate calls: where a step's time goes."""
    profiler = cProfile.Profile()

    def profiled(original):
        def step(self, ctx):
            if ctx.block_step == 0:
                return original(self, ctx)
            profiler.enable()
            try:
                return original(self, ctx)
            finally:
                profiler.disable()
        return step

    _generate_with_step(profiled, model, prompt_ids, cache, runs, **options)
    return pstats.Stats(profiler)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def step_matmuls(model, prompt_ids: list[list[int]], cache, pick: Callable[[object], bool], **options) -> list[MatmulCall]:
    """Matmul calls of the first step whose StepContext satisfies `pick` (recorded in a separate call)."""
    found: list[list[MatmulCall]] = []

    def recorded(original):
        def step(self, ctx):
            if found or not pick(ctx):
                return original(self, ctx)
            recorder = _Recorder()
            with recorder:
                out = original(self, ctx)
            found.append(recorder.calls)
            return out
        return step

    _generate_with_step(recorded, model, prompt_ids, cache, **options)
    if not found:
        raise RuntimeError("no step matched")
    return found[0]


def arith_prompt_ids(model, n: int = 1, offset: int = 0) -> list[list[int]]:
    """Token ids of the first bundled arith eval questions, encoded as generate would."""
    from .tasks import arith

    questions = [p["question"] for p in arith.eval_split()[offset : offset + n]]
    return encode_prompts(model, questions, chat=True)


def prepare_machine(threads: int = 0) -> None:
    """What unmask bench does before timing: keep freed memory (steady step times), pick threads (0: torch's)."""
    keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)
