"""CPU thread policy of unmask's commands: fast on an idle machine, graceful on a busy one.

OpenMP's default wait policy spins idle worker threads for a while at every barrier; when other
processes hold the cores, a spinning thread steals the time its partner needs and a 32-token
generate took 10 s instead of 0.1 s (measured on 2 shared cores). On an idle machine, though,
spinning is what makes short parallel regions fast: sleeping workers cost 30 % of the tokens/s
(measured: 2 threads, bundled model, baseline 17-19 vs 24-27 tokens/s). So the commands, before
torch loads, use as many threads as cores are free (the usable cores, from affinity and cgroup
quota, minus the 1-minute load average, at least one, shared among the processes of a
data-parallel launch on this machine) and make OpenMP workers sleep when idle
(OMP_WAIT_POLICY=PASSIVE) only when other work holds at least one core. An explicit
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


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def machine_busy(load: float | None = None) -> bool:
    """Whether other work holds at least one core (1-minute load average)."""
    return round(_load() if load is None else load) >= 1


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
        load = _load()
    per_machine = max(1, int(env.get("LOCAL_WORLD_SIZE", "1") or 1))  # processes of one launch share the cores
    free = max(1, min(cores, round(cores - load)))
    return max(1, free // per_machine)


def apply_policy() -> int:
    """Set the wait policy (only possible before torch is imported) and the thread count;
    returns the number of threads torch will use."""
    if "torch" not in sys.modules and machine_busy():
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads = choose_threads()
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
