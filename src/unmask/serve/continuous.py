"""Continuous batching for `unmask serve`: requests join a running batch at its next denoising step
and leave it as soon as they are done.

Engine threads (`workers`) each run their own batches. Each admitted request gets its own denoising
loop (its own options, commit rule, cache settings and cache-policy state); loops of the same group
(`Job.group`: the cache method) on one thread share a `SlotBatch`, which runs one forward per step
for all of them. So requests that differ in gen_length, block_length, threshold, steps, temperature,
cache settings, ... share a batch; another cache method starts another batch (a thread steps its
batches in turn), and a seeded sampled request runs in a batch of its own (its answer must not
depend on other traffic).

Memory is bounded by a canvas-token budget (`max_batch_tokens`: over all running batches, sequences
x their batch's canvas length); a request that does not fit waits in the queue, first come first
served, until finished requests free room. A request larger than the whole budget runs when nothing
else does. The queue itself is bounded (`max_queue`): a full queue refuses new work (503).
"""

from __future__ import annotations

import logging
import threading
import time

import torch

from ..engine.slots import SlotBatch
from ..generate import _PrefixReporter, make_loop, result_of
from ..vision.prompt import IMAGE_PLACEHOLDER
from ..models.model import LoadedModel
from .batcher import Cancelled, Job, JobQueue, Outcome, QueueFull, _deliver

log = logging.getLogger("unmask.serve")


class _Member:
    """A running request: its job, its loop, when it was admitted and the largest batch it ran in."""

    def __init__(self, job: Job, loop, group: str, admitted: float, batch_size: int):
        self.job, self.loop, self.group, self.admitted, self.batch_size = job, loop, group, admitted, batch_size
        self.length = job.width + job.gen_length  # its canvas (image features included)


class _Worker:
    """One engine thread's batches (by group) and running requests (by id of their loop)."""

    def __init__(self):
        self.batches: dict[str, SlotBatch] = {}
        self.members: dict[int, _Member] = {}

    def tokens(self, extra: tuple[str, int] | None = None) -> int:
        """Canvas positions its batches hold (with `extra` = (group, length) joining): per batch, requests x
        the longest canvas. Counted from the members, which change under the batcher's lock only."""
        shapes: dict[str, tuple[int, int]] = {}
        joining = [(m.group, m.length) for m in self.members.values()] + ([extra] if extra else [])
        for group, length in joining:
            n, longest = shapes.get(group, (0, 0))
            shapes[group] = (n + 1, max(longest, length))
        return sum(n * longest for n, longest in shapes.values())


class ContinuousBatcher(JobQueue):
    """The same interface as RequestBatcher (submit, cancel, stats, start, close), continuous batches.

    `workers` engine threads each run their own batches (on a CPU, one thread per core keeps the cores
    busy; on a GPU one is enough); a queued request goes to the thread running the fewest requests.
    """

    def __init__(self, model: LoadedModel, max_batch: int = 8, max_queue: int = 64, max_batch_tokens: int = 16384,
                 workers: int = 1):
        if min(max_batch, max_queue, max_batch_tokens, workers) < 1:
            raise ValueError("max_batch, max_queue, max_batch_tokens and workers must be >= 1")
        super().__init__(max_queue)
        self.model = model
        self.max_batch, self.max_batch_tokens = max_batch, max_batch_tokens
        self._workers = [_Worker() for _ in range(workers)]

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"queued": len(self._pending), "running": self._running(), "max_queue": self.max_queue,
                    "cancelled": self._cancelled, "batch_tokens": self._tokens()}

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._threads:
                return
            self._closed = False
            for i, worker in enumerate(self._workers):
                thread = threading.Thread(target=self._work, args=(worker,), name=f"unmask-serve-continuous-{i}", daemon=True)
                self._threads.append(thread)
                thread.start()

    # -- the workers --------------------------------------------------------------------------------
    def _work(self, worker: _Worker) -> None:
        with torch.inference_mode():
            while self._admit(worker):
                for group, batch in list(worker.batches.items()):
                    self._step(worker, group, batch)
        with self._cond:
            left = list(worker.members.values())
            worker.members.clear()
            worker.batches.clear()
        for member in left:  # closed while running
            _deliver(member.job, QueueFull("the server is shutting down"))

    def _tokens(self) -> int:
        return sum(worker.tokens() for worker in self._workers)

    def _running(self) -> int:
        return sum(len(worker.members) for worker in self._workers)

    def _admit(self, worker: _Worker) -> bool:
        """Move queued jobs into this worker's batches while they fit; wait while it has nothing to run.
        False once closed."""
        with self._cond:
            while True:
                if self._closed:
                    return False
                job = self._fits(worker)
                if job is not None:
                    self._pending.remove(job)
                    self._join(worker, job)
                    continue
                if worker.members:
                    return True
                self._cond.wait()

    def _fits(self, worker: _Worker) -> Job | None:
        """The oldest queued job if this worker should take it now, else None: first come, first served;
        the worker running the fewest requests takes it; within the budget unless nothing runs at all."""
        if not self._pending or len(worker.members) > min(len(w.members) for w in self._workers):
            return None
        job = self._pending[0]
        group = self._group(job)
        batch = worker.batches.get(group)
        if batch is not None and len(batch) >= self.max_batch:
            return None
        after = self._tokens() - worker.tokens() + worker.tokens((group, job.width + job.gen_length))
        if self._running() and after > self.max_batch_tokens:
            return None
        return job

    @staticmethod
    def _group(job: Job) -> str:
        return job.group if job.group is not None else job.key

    def _join(self, worker: _Worker, job: Job) -> None:
        if job.cancelled:
            return
        try:
            vocab = self.model.cfg.vocab_size
            if any(not 0 <= t < vocab for t in job.input_ids if not (job.images and t == IMAGE_PLACEHOLDER)):
                raise ValueError(f"prompt token ids must be in [0, {vocab})")
            images = [job.images] if job.images else None
            loop = make_loop(self.model, input_ids=[job.input_ids], images=images, cache=job.cache, **job.options)
        except Exception as exc:  # noqa: BLE001 - a request the engine refuses fails alone
            log.warning("request refused: %s: %s", type(exc).__name__, exc)
            _deliver(job, exc)
            return
        loop.cancelled = lambda _: job.cancelled
        if job.on_prefix is not None:
            loop.prefix_hook = _PrefixReporter(_listener(job), 1)
        group = self._group(job)
        batch = worker.batches.setdefault(group, SlotBatch(self.model.module))
        batch.add(loop)
        worker.members[id(loop)] = _Member(job, loop, group, time.perf_counter(), len(batch))

    def _step(self, worker: _Worker, group: str, batch: SlotBatch) -> None:
        for loop in batch.members:
            member = worker.members[id(loop)]
            member.batch_size = max(member.batch_size, len(batch))
        try:
            left = batch.step()
        except Exception as exc:  # noqa: BLE001 - the batch's state is unknown: its requests fail, the server goes on
            log.warning("a batch of %d failed: %s: %s", len(batch), type(exc).__name__, exc)
            left = batch.members
            outcome: BaseException | None = exc
            with self._cond:
                del worker.batches[group]
        else:
            outcome = None
            if not len(batch):
                with self._cond:
                    del worker.batches[group]
        if not left:
            return
        with self._cond:
            members = [worker.members.pop(id(loop)) for loop in left]
            self._cond.notify_all()
        for member in members:
            _deliver(member.job, outcome or self._outcome(member))

    @staticmethod
    def _outcome(member: _Member) -> Outcome | BaseException:
        if member.job.cancelled:
            return Cancelled()
        loop = member.loop
        return Outcome(
            token_ids=result_of(loop, loop.prompt_ids).token_ids[0],
            nfe=loop.nfe[0],
            seconds=loop.seconds[0],
            queue_seconds=member.admitted - member.job.submitted,
            batch_size=member.batch_size,
        )


def _listener(job: Job):
    """The job's prefix listener, dropped (not fatal) once it fails or its client has gone."""
    broken = False

    def call(_: int, prefix: list[int]) -> None:
        nonlocal broken
        if broken or job.cancelled:
            return
        try:
            job.on_prefix(prefix)
        except Exception as exc:  # noqa: BLE001 - a broken listener must not stop the batch
            log.warning("dropping a prefix listener: %s", exc)
            broken = True

    return call
