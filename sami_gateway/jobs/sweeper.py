"""Deleting what has expired: finished jobs after `SAMI_JOB_TTL`, uploads after theirs, and the
files no job or upload refers to any more (left by a crash between two writes) with the uploads a
crash left claimed without their file: at start in the single process, now and then, past a grace,
in scale-out (`cluster/orphans.py`)."""

from __future__ import annotations

import logging
import time

from ..errors import log_failure
from ..runtime.periodic import Periodic
from .blob_keys import JOB_AREAS, UPLOADS, upload_key
from .service import JobService

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60.0  # expiry is checked this often; `expires_at` is when a job may go, not must
BATCH = 200


class Sweeper:
    """Removes expired jobs and uploads with their files, in the background."""

    def __init__(self, service: JobService, interval: float | None = None) -> None:
        self._service = service
        ttl = min(service.settings.job_ttl, service.settings.upload_ttl)
        self._interval = interval or min(SWEEP_SECONDS, max(0.1, ttl / 4))  # short lives are swept promptly
        self._rounds = Periodic("sweeper", self.sweep, self._interval, first_wait=True, failed=self._failed)

    async def start(self, orphans: bool = True) -> None:
        """Sweep (orphan files too, unless other processes may be writing them now), then keep sweeping.
        A sweep that fails here (a store that cannot be written yet) is logged: start-up goes on."""
        try:
            if orphans:
                await self.sweep_orphans()
            await self.sweep()
        except Exception:  # noqa: BLE001 - the loop sweeps again
            log_failure(log, "sweeping at start failed")
        self._rounds.start()

    async def stop(self) -> None:
        await self._rounds.stop()

    @staticmethod
    def _failed(exc: Exception) -> float:
        log_failure(log, "sweeping expired jobs failed")
        return 0.0  # the next round comes after the usual interval

    async def sweep(self) -> int:
        """Delete expired jobs and uploads; how many went. One that cannot be deleted is logged with
        its id and left for the next round; the others still go."""
        service, now, removed = self._service, time.time(), 0
        failed: set[str] = set()
        while jobs := [job for job in await service.store.expired_jobs(now, BATCH + len(failed))
                       if job.id not in failed]:
            for job in jobs:
                try:
                    await service.forget_in_namespace(job.appkey, job.id)
                    await service.store.delete_job(job.id)
                    await service.remove_files(job.id)
                    service.events.forget(job.id)
                    removed += 1
                except Exception:  # noqa: BLE001 - logged with its id, tried again next round
                    log_failure(log, "sweeping job %s failed", job.id)
                    failed.add(job.id)
        while uploads := [upload for upload in await service.store.expired_uploads(now, BATCH + len(failed))
                          if upload.id not in failed]:
            for upload in uploads:
                try:
                    await service.store.delete_upload(upload.id)
                    await service.blobs.delete_prefix(upload.key)
                    removed += 1
                except Exception:  # noqa: BLE001 - logged with its id, tried again next round
                    log_failure(log, "sweeping upload %s failed", upload.id)
                    failed.add(upload.id)
        if removed:
            log.info("swept %d expired jobs and uploads", removed)
        return removed

    async def sweep_orphans(self, grace: float | None = None) -> int:
        """Files of jobs and uploads the store does not know, and uploads whose file a crash lost.

        Without `grace`, all of them: the single process, before it serves. With it, only what is
        older than `grace` seconds: in scale-out, fronts write a job's input before the job exists
        and a PUT's bytes before its upload is claimed, at any moment. The store is read before the
        storage is listed, so a file old enough to go had its job or upload recorded by then.
        """
        service, removed = self._service, 0
        before = None if grace is None else time.time() - grace
        jobs = await service.store.job_ids()
        for area in JOB_AREAS:
            for name in await service.blobs.folders(area, before) - jobs:
                await service.blobs.delete_prefix(f"{area}/{name}")
                removed += 1
        uploads = await service.store.upload_ids()
        names = await service.blobs.folders(UPLOADS)
        old = names if before is None else await service.blobs.folders(UPLOADS, before)
        for name in old - uploads:  # a form's file, or a PUT's private file, left by a crash
            await service.blobs.delete_prefix(upload_key(name))
            removed += 1
        for upload_id in uploads - names:  # not PUT yet, or claimed by a PUT that died before its move
            upload = await service.store.get_upload(upload_id)
            claimed = None if upload is None else upload.completed_at
            if claimed is not None and (before is None or claimed < before):
                await service.store.delete_upload(upload_id)  # its bytes are lost: the upload is unusable
                removed += 1
        if removed:
            log.info("swept %d orphan files", removed)
        return removed
