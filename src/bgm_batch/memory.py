"""Process memory policy: freed audio buffers go back to the system.

An hour of music passes through the render and stitch stages as thousands of buffers of a
few megabytes. glibc's allocator serves them from its heaps once its mmap threshold has
risen past their size, and a heap keeps pages that its freed buffers leave between live
ones: measured, a render process held ~90 MB more than it used. Two remedies, both cheap:
at most ``ARENAS`` heaps per process (one per thread otherwise), and ``trim`` (glibc's
``malloc_trim``, which also hands back free pages inside the heap) after each piece of work.
A fixed, low mmap threshold would do it too, but measured it tripled the system time (every
buffer freshly mapped and zeroed by the kernel). No-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

M_ARENA_MAX = -8
ARENAS = 2


@functools.cache
def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def return_freed_memory() -> bool:
    """Limit this process to ``ARENAS`` heaps; whether it applied."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_ARENA_MAX, ARENAS))


def trim() -> None:
    """Hand the heaps' free pages back to the system."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
