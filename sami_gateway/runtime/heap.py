"""How the process's C heap (glibc's malloc) keeps what is freed: a process-wide choice, made first.

By default glibc maps large blocks afresh and unmaps them when freed, and gives each thread that
allocates an arena of its own (heaps of at most 64 MiB, which map anything larger). So every forward
pass of a model faults in its activations page by page again, and the process's memory swings by
hundreds of MiB within milliseconds. `retain_freed_memory` has every thread allocate from the one
main heap, never mapped apart, never trimmed: what is freed is reused (what PyTorch's CPU performance
guide gets from jemalloc or tcmalloc). The cost: the process keeps its peak memory.

A heap kept for the process's life is also what the kernel's khugepaged collapses into huge pages
(NumPy asks for them on its large arrays): each collapse holds the process's memory map for writing,
and any thread that faults a page meanwhile waits, the event loop too. Measured with
`bench/loop_latency.py`, the loop stalled 15 to 35 ms every 10.2 s (khugepaged's scan period), at
each collapse. So the same choice opts the process out of transparent huge pages (PR_SET_THP_DISABLE):
its pages are reused rather than faulted afresh, so huge pages would save it little.

It must come before any thread allocates: glibc fixes how many arenas there may be when the first
thread other than the main one asks for one, and a thread keeps its arena. `sami-gateway serve` and
`worker` call it before the app (aiohttp, torch and their threads) is built; called later, threads
already running keep their arenas and their large blocks are still mapped and unmapped.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters (malloc.h)
PR_SET_THP_DISABLE = 41  # prctl(2), Linux 3.15 and later; inherited by the process's children


@functools.cache
def retain_freed_memory() -> bool:
    """One heap for every thread, nothing mapped apart or trimmed, no huge pages; whether glibc took it
    (elsewhere than glibc, nothing is done: False). A kernel that cannot opt out of huge pages leaves
    them as they were: the heap's choice stands."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    taken = all(mallopt(option, value) for option, value in
                ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)))
    if taken and hasattr(libc, "prctl"):
        libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)
    return taken
