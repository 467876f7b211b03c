"""A per-appkey quota as configured (`SAMI_DEFAULT_QUOTA`, `[appkeys.K] quota`); `auth/quota.py` keeps it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quota:
    """`rate` requests per second on average, bursts of `burst`, at most `concurrent` at once, and at
    most `streams` event streams and long polls open at once."""

    rate: float
    burst: int
    concurrent: int
    streams: int = 16

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1 or self.concurrent < 1 or self.streams < 1:
            raise ValueError("quota needs rate > 0, burst >= 1, concurrent >= 1 and streams >= 1")
