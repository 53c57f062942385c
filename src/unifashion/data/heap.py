"""Resident memory that stays flat over a long run: glibc's allocator told to hand back large blocks.

glibc serves blocks above its mmap threshold with their own mapping, returned to the system when
freed. But it raises that threshold each time such a block is freed (up to 32 MB); from then on,
tensors of varying shapes (texts padded to each batch's longest, score chunks) are carved from the
heap, and the holes they leave are kept by the process. Resident memory then grows with the number
of batches, that is with the dataset: evaluating 25,000 FashionGen products grew it by 0.4 GB over
5,000 (``benchmarks/results/training_memory_glibc_default.md``, against ``training_memory.md``
with the threshold fixed). A fixed threshold turns the adjustment off
(``benchmarks/bench_heap.py`` measures it on one allocation pattern).

The setting is the process's, not a library's to make: only the CLI's entry point
(:func:`unifashion.cli.main`) calls :func:`bound_heap_growth`; a program that runs training or
evaluation through the library for as long calls it itself, at its start.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
DEFAULT_MMAP_THRESHOLD = 256 * 1024

_applied = False


def bound_heap_growth(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``mmap_threshold`` bytes for this process; True when set.

    A no-op (False) off glibc, and when the user set ``MALLOC_MMAP_THRESHOLD_`` themselves (glibc
    reads it at start-up; theirs wins). Idempotent. Called by the CLI's entry point only (see
    the module docstring).
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    _applied = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return _applied
