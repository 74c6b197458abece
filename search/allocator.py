"""Keep freed memory in the process for reuse: training allocates the same big tensors every batch.

glibc serves an allocation over its mmap threshold (at most 32 MB) with a fresh `mmap` and returns it
to the system on free, so every batch's activations fault their pages in again: a CPU study can spend
as much time in the kernel as in compute (bench/RESULTS.md, "Measurements behind the code"). The
price is that a process keeps its peak heap until it exits, which a study's worker does anyway.
Other C libraries (musl, macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1  # <malloc.h>: free memory at the heap's top is returned above this many bytes
M_MMAP_MAX = -4  # <malloc.h>: how many allocations may be served by mmap at once (0: none, all from the heap)
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes an int: the largest it accepts


def keep_freed_memory() -> bool:
    """Ask glibc to serve big allocations from its heap and keep them there; False where that cannot be asked."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
