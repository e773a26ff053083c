"""Keep freed host memory in the process, so denoising steps do not pay page faults.

Every step allocates and frees the same large temporaries (activations of all canvas rows,
hundreds of KiB to MiB each). glibc's malloc returns such blocks to the OS (mmap'd blocks on
free, the heap top past its trim threshold), and the next step faults the pages in again; on a
virtual machine that made the same decode 10-40% slower from one process to the next. Raising
both thresholds makes freed blocks stay reusable: steady, faster steps, at the cost of the
process keeping its peak memory. Opt-in and process-wide, so it lives on the benchmark side,
not in the engine: `unmask bench` and the speed scripts (benchmarks/) call it; library users
may too, before loading a model.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 * 2**20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
_TRIM = 2**31 - 1  # the largest value mallopt's int accepts: never trim


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory (no trimming; blocks under 32 MiB from the heap).

    Returns True when applied, False where the C library is not glibc (nothing changes there).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim = mallopt(_M_TRIM_THRESHOLD, _TRIM)
    mmap = mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)
    return bool(trim and mmap)
