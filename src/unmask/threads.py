"""CPU thread policy of unmask's commands: fast on an idle machine, graceful on a busy one.

OpenMP's default wait policy spins idle worker threads for a while at every barrier; when other
processes hold the cores, a spinning thread steals the time its partner needs and a 32-token
generate took 10 s instead of 0.1 s (measured on 2 shared cores). So the commands, before torch
loads, make OpenMP threads sleep when idle (OMP_WAIT_POLICY=PASSIVE) and use as many threads as
cores are free: the usable cores (affinity, cgroup quota) minus the 1-minute load average, at
least one, shared among the processes of a data-parallel launch on this machine. An explicit
UNMASK_NUM_THREADS, or OMP_NUM_THREADS / OMP_WAIT_POLICY set by the user, wins.

The library (`import unmask`) leaves the process's thread settings alone: they belong to the caller.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

ENV = "UNMASK_NUM_THREADS"


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def choose_threads(env: dict[str, str] | None = None, load: float | None = None, cores: int | None = None) -> int | None:
    """The intra-op thread count for this process, or None to leave torch's own choice
    (OMP_NUM_THREADS set by the user)."""
    env = os.environ if env is None else env
    explicit = env.get(ENV, "").strip()
    if explicit:
        try:
            value = int(explicit)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{ENV}={explicit!r} must be a positive integer")
        return value
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    per_machine = max(1, int(env.get("LOCAL_WORLD_SIZE", "1") or 1))  # processes of one launch share the cores
    free = max(1, min(cores, round(cores - load)))
    return max(1, free // per_machine)


def apply_policy() -> int:
    """Set the wait policy (only possible before torch is imported) and the thread count;
    returns the number of threads torch will use."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads = choose_threads()
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
