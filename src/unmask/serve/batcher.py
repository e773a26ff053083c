"""A bounded request queue and the worker threads that run requests in batches.

Requests with the same settings key (cache and every decoding option) are denoised together
through unmask.generate's batch path; for greedy decoding the engine is batch-invariant, so a
batched answer equals the answer the request gets alone. A batch that fails is rerun one
request at a time, so one bad request only fails itself. The queue has a hard bound: a full
queue refuses new work instead of growing. A job whose client has gone (`cancel`) leaves the
queue at once, or, once running, its batch at the next denoising step; a batch whose jobs are
all cancelled stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..generate import generate
from ..models.model import LoadedModel

log = logging.getLogger("unmask.serve")


class QueueFull(Exception):
    """The queue holds `max_queue` waiting requests already."""


class Cancelled(Exception):
    """The job was cancelled (its client went away) before its answer was ready."""


@dataclass
class Outcome:
    """One request's share of a batch result."""

    token_ids: list[int]  # the generated region, EOS tail included
    nfe: int
    seconds: float  # denoising wall time until this request finished (its batch's clock)
    queue_seconds: float  # from submission to the start of its batch
    batch_size: int


@dataclass(eq=False)
class Job:
    """A request as the batcher sees it; callbacks run on a worker thread and must not block."""

    input_ids: list[int]
    cache: dict | None
    options: dict[str, Any]  # unmask.generate keyword options, gen_length included
    key: str  # equal keys may share a batch
    on_done: Callable[[Outcome | BaseException], None]
    on_prefix: Callable[[list[int]], None] | None = None  # the committed prefix as it grows (streaming)
    group: str | None = None  # continuous batching: equal groups may share a running batch (None: the key)
    images: list | None = None  # preprocessed images, one per -200 in input_ids (LLaDA-V)
    prompt_tokens: int | None = None  # canvas rows of the prompt with image features (None: len(input_ids))
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set once, by RequestBatcher.cancel; read by the worker at every step
    finished: bool = False  # on_done has been called

    @property
    def gen_length(self) -> int:
        return int(self.options["gen_length"])

    @property
    def width(self) -> int:
        return self.prompt_tokens or len(self.input_ids)


class JobQueue:
    """The request side both schedulers share (RequestBatcher, serve.continuous.ContinuousBatcher): a
    bounded FIFO of jobs, cancellation and shutdown. Subclasses run the jobs on their `_threads`."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self._pending: list[Job] = []
        self._cancelled = 0
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, job: Job) -> None:
        """Queue a job, or raise QueueFull without queueing it."""
        with self._cond:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting (max_queue={self.max_queue})")
            self._pending.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """The client went away: drop the job from the queue, or from its running batch at the next
        step. Its `on_done` gets Cancelled (if it has not had its outcome already)."""
        with self._cond:
            if job.cancelled or job.finished:
                return
            job.cancelled = True
            self._cancelled += 1
            queued = job in self._pending
            if queued:
                self._pending.remove(job)
        if queued:
            _deliver(job, Cancelled())

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking work; queued jobs are failed (and running ones by their worker) so no caller waits forever."""
        with self._cond:
            self._closed = True
            left, self._pending = self._pending, []
            self._cond.notify_all()
        for job in left:
            _deliver(job, QueueFull("the server is shutting down"))
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []


class RequestBatcher(JobQueue):
    """Groups queued jobs into batches (same key, at most `max_batch` jobs and `max_batch_tokens`
    canvas positions: jobs x (longest prompt + gen_length)) and runs them on `workers` threads."""

    def __init__(
        self,
        model: LoadedModel,
        max_batch: int = 8,
        max_queue: int = 64,
        max_batch_tokens: int = 16384,
        workers: int = 1,
        batch_wait: float = 0.005,
    ):
        if min(max_batch, max_queue, max_batch_tokens, workers) < 1 or batch_wait < 0:
            raise ValueError("max_batch, max_queue, max_batch_tokens and workers must be >= 1, batch_wait_ms >= 0")
        super().__init__(max_queue)
        self.model = model
        self.max_batch, self.max_batch_tokens = max_batch, max_batch_tokens
        self.workers, self.batch_wait = workers, batch_wait
        self._running = 0

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"queued": len(self._pending), "running": self._running, "max_queue": self.max_queue,
                    "cancelled": self._cancelled}

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._threads:
                return
            self._closed = False
            for i in range(self.workers):
                thread = threading.Thread(target=self._work, name=f"unmask-serve-{i}", daemon=True)
                self._threads.append(thread)
                thread.start()

    # -- the worker side ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            try:
                self._run(jobs)
            finally:
                with self._cond:
                    self._running -= len(jobs)

    def _take(self) -> list[Job] | None:
        """Block until a batch is ready: the oldest job plus the same-key jobs that fit.

        The oldest job waits at most `batch_wait` for companions; under load the queue
        fills while a batch runs, so batches form without waiting.
        """
        with self._cond:
            while True:
                if self._closed:
                    return None
                if not self._pending:
                    self._cond.wait()
                    continue
                head = self._pending[0]
                delay = head.submitted + self.batch_wait - time.perf_counter()
                if delay > 0 and sum(j.key == head.key for j in self._pending) < self.max_batch:
                    self._cond.wait(delay)
                    continue
                batch = self._fill(head)
                for job in batch:
                    self._pending.remove(job)
                self._running += len(batch)
                return batch

    def _fill(self, head: Job) -> list[Job]:
        batch, width = [head], head.width
        for job in self._pending[1:]:
            if len(batch) >= self.max_batch:
                break
            if job.key != head.key:
                continue
            wider = max(width, job.width)
            if (len(batch) + 1) * (wider + head.gen_length) > self.max_batch_tokens:
                continue
            batch.append(job)
            width = wider
        return batch

    def _run(self, jobs: list[Job]) -> None:
        live = [job for job in jobs if not job.cancelled]
        for job in jobs:
            if job.cancelled:
                _deliver(job, Cancelled())
        if not live:
            return
        started = time.perf_counter()
        try:
            outcomes = self._generate(live, started)
        except Exception as exc:  # noqa: BLE001 - any failure of a batch is retried or reported per job
            if len(live) == 1:
                log.warning("request failed: %s: %s", type(exc).__name__, exc)
                _deliver(live[0], exc)
                return
            log.warning("batch of %d failed (%s: %s); rerunning its requests one by one", len(live), type(exc).__name__, exc)
            for job in live:
                self._run([job])
            return
        for job, outcome in zip(live, outcomes):
            _deliver(job, Cancelled() if job.cancelled else outcome)

    def _generate(self, jobs: list[Job], started: float) -> list[Outcome]:
        listeners = [job.on_prefix for job in jobs]

        def on_step(index: int, prefix: list[int]) -> None:
            listener = listeners[index]
            if listener is None or jobs[index].cancelled:
                return
            try:
                listener(prefix)
            except Exception as exc:  # noqa: BLE001 - a broken listener must not stop the batch
                log.warning("dropping a prefix listener: %s", exc)
                listeners[index] = None

        head = jobs[0]
        result = generate(
            self.model,
            input_ids=[job.input_ids for job in jobs],
            images=[job.images or [] for job in jobs] if any(job.images for job in jobs) else None,
            cache=head.cache,
            on_step=on_step if any(listeners) else None,
            cancelled=lambda index: jobs[index].cancelled,
            **head.options,
        )
        return [
            Outcome(
                token_ids=result.token_ids[i],
                nfe=result.nfe[i],
                seconds=result.seconds[i],
                queue_seconds=started - job.submitted,
                batch_size=len(jobs),
            )
            for i, job in enumerate(jobs)
        ]


def _deliver(job: Job, outcome: Outcome | BaseException) -> None:
    job.finished = True
    try:
        job.on_done(outcome)
    except Exception as exc:  # noqa: BLE001 - the caller's problem, never the worker's
        log.warning("result callback failed: %s", exc)
