"""The storage's orphans in scale-out: objects no job or upload refers to, swept by one worker at a time.

A front stores a job's input before the job exists in Redis, and a form's file or a PUT's bytes
before their upload records them; a front that dies in between, a job Redis lost in its last
second, or a job deleted while its worker still wrote results, leaves objects nobody refers to.
Workers delete them once they are older than a grace longer than any front keeps an object
unrecorded. A worker sweeps when it sets `keys.ORPHAN_SWEEP`, which lapses after `interval`: the
fleet lists the bucket about once per interval however many workers it has. (Two sweeps at once,
after a slow one, would only delete the same objects twice.)
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from ..config import Config
from ..jobs.api.http import file_seconds
from ..jobs.sweeper import Sweeper
from ..runtime.periodic import Periodic
from . import keys
from .redis_client import redis_unavailable

log = logging.getLogger(__name__)
# On top of a file body's time (a form's file is stored while the rest of its body still arrives):
# the front's copy and Redis calls, each bounded within seconds, and the storage's clock against ours.
MARGIN_SECONDS = 600.0
INTERVAL_SECONDS = 600.0  # the fleet sweeps about this often: an orphan lasts at most grace + 1.3 intervals


def orphan_grace(config: Config) -> float:
    """Seconds an object nobody refers to is left alone: longer than a front may keep one unrecorded."""
    return file_seconds(config.body_timeout, config.max_job_input_bytes) + MARGIN_SECONDS


class OrphanSweeper:
    """Sweeps the storage's orphans when it is this worker's turn, in the background."""

    def __init__(self, client: aioredis.Redis, sweeper: Sweeper, name: str, grace: float,
                 interval: float = INTERVAL_SECONDS) -> None:
        self._client = client
        self._sweeper = sweeper
        self._name = name
        self.grace = grace
        self.interval = interval
        # Redis or storage away, or a bug: logged, and the next turn tries again
        self._rounds = Periodic("sweeping the storage's orphans", self.sweep_if_due, interval / 4)

    def start(self) -> None:
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    async def sweep_if_due(self) -> int | None:
        """Sweep unless another worker did within `interval`: how many went, None when not this one's turn."""
        with redis_unavailable():
            turn = await self._client.set(keys.ORPHAN_SWEEP, self._name, nx=True, px=int(self.interval * 1000))
        if not turn:
            return None
        return await self._sweeper.sweep_orphans(self.grace)
