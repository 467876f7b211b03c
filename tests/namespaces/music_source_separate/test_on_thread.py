"""What a call on an audio thread returns after its caller was cancelled is let go, never left open."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from namespaces.music_source_separate.pipeline.on_thread import run_owned


def test_what_a_call_returns_after_its_caller_left_is_released() -> None:
    released: list[object] = []
    running, finish = threading.Event(), threading.Event()

    def opens() -> str:  # an open file, a temporary entry, a lease: taken on the thread
        running.set()
        finish.wait(10)
        return "open"

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            caller = asyncio.ensure_future(run_owned(pool, released.append, opens))
            await asyncio.to_thread(running.wait, 10)
            caller.cancel()  # the client left while the call ran
            await asyncio.gather(caller, return_exceptions=True)
            assert caller.cancelled() and released == []
            finish.set()
        assert released == ["open"]  # once the call returned, on its thread

    asyncio.run(main())


def test_a_call_never_begun_is_not_run_and_nothing_or_none_is_released() -> None:
    released: list[object] = []
    ran: list[str] = []
    busy, finish = threading.Event(), threading.Event()

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: (busy.set(), finish.wait(10)))  # the one thread is taken
            await asyncio.to_thread(busy.wait, 10)
            waiting = asyncio.ensure_future(run_owned(pool, released.append, lambda: ran.append("ran")))
            nothing = asyncio.ensure_future(run_owned(pool, released.append, lambda: None))
            await asyncio.sleep(0)
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            finish.set()
            assert await nothing is None
        assert ran == [] and released == []

    asyncio.run(main())


def test_an_awaited_call_gives_its_value_and_releases_nothing() -> None:
    released: list[object] = []

    async def main() -> str:
        with ThreadPoolExecutor(1) as pool:
            return await run_owned(pool, released.append, lambda: "kept")

    assert asyncio.run(main()) == "kept" and released == []
