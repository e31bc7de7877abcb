"""Keeping freed memory in the process while training, so large tensors do not page-fault on every step.

glibc's ``malloc`` serves blocks above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns them
with ``munmap`` when freed. A training step of the small preset allocates and frees activations of 8-34 MB dozens
of times; each new mapping is zero-filled by the kernel page by page on first touch (about 100,000 minor page
faults per step, measured with ``getrusage``), which cost about a quarter of the step time on the 2-core CPU
(docs/BENCHMARKS.md, "Training speed and GPU"). Turning off mmap for the duration and raising the trim threshold
lets ``free`` keep those pages in the heap, where the next step reuses them.

This changes where memory comes from, never the arithmetic: losses and weights stay bit-identical. On exit the
previous behaviour is restored as far as glibc allows and the heap is trimmed, so the memory goes back to the
system. Elsewhere than glibc Linux (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
#: glibc's defaults, restored on exit (the trim threshold's is 128 KiB; mmap may serve 65,536 blocks at once).
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
#: While active, up to this much free heap stays in the process (more than a paper-preset step's activations).
KEEP_BYTES = (1 << 31) - 1  # mallopt takes a C int


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Within the block, freed memory stays in the heap for reuse; yields whether that could be switched on."""
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    on = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, KEEP_BYTES))
    try:
        yield on
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
