"""Blocking calls made on an audio thread and awaited from the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


async def run_on(pool: ThreadPoolExecutor, func: Callable[..., T], *args: Any) -> T:
    """`func(*args)` on one of `pool`'s threads."""
    return await asyncio.get_running_loop().run_in_executor(pool, func, *args)


async def run_owned(pool: ThreadPoolExecutor, release: Callable[[Any], object], func: Callable[..., T],
                    *args: Any) -> T:
    """`func(*args)` on one of `pool`'s threads, for what it returns: open files, a temporary cache entry,
    a model's lease. If the caller is cancelled while `func` runs, that (when not None) goes to `release`
    once `func` returns, on the thread that ran it; one never begun is not run."""
    future = pool.submit(func, *args)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.add_done_callback(partial(_release, release))
        raise


def soon_on(pool: ThreadPoolExecutor, func: Callable[..., object], *args: Any) -> None:
    """`func(*args)` on one of `pool`'s threads, not awaited (here, once the pool has stopped): a model
    let go, a temporary entry removed, never on the event loop while the pool runs."""
    try:
        pool.submit(func, *args)
    except RuntimeError:
        func(*args)


def _release(release: Callable[[Any], object], done: Future[Any]) -> None:
    if not done.cancelled() and done.exception() is None and (value := done.result()) is not None:
        release(value)
