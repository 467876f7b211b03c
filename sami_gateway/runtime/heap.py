"""How the process's C heap (glibc's malloc) keeps what is freed: a process-wide choice, made first.

By default glibc maps large blocks afresh and unmaps them when freed, and gives each thread that
allocates an arena of its own (heaps of at most 64 MiB, which map anything larger). So every forward
pass of a model faults in its activations page by page again, and the process's memory swings by
hundreds of MiB within milliseconds. `retain_freed_memory` has every thread allocate from the one
main heap, never mapped apart, never trimmed: what is freed is reused (what PyTorch's CPU performance
guide gets from jemalloc or tcmalloc). The cost: the process keeps its peak memory.

It must come before any thread allocates: glibc fixes how many arenas there may be when the first
thread other than the main one asks for one, and a thread keeps its arena. `sami-gateway serve` and
`worker` call it before the app (aiohttp, torch and their threads) is built; called later, threads
already running keep their arenas and their large blocks are still mapped and unmapped.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters (malloc.h)


@functools.cache
def retain_freed_memory() -> bool:
    """One heap for every thread, nothing mapped apart or trimmed; whether glibc took it (elsewhere
    than glibc, nothing is done: False)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return all(mallopt(option, value) for option, value in
               ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)))
