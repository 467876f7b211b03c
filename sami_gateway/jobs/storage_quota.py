"""What one appkey keeps in the Jobs API's storage: bytes, uploads and jobs.

The job store counts what an appkey holds (`StorageUsage`): the bytes of its uploads and of its
jobs' stored inputs and results, its uploads and its jobs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StorageUsage:
    """What an appkey holds: bytes of its uploads and jobs (inputs and results), uploads (also those
    not PUT yet) and jobs (of every status)."""

    stored_bytes: int = 0
    uploads: int = 0
    jobs: int = 0
