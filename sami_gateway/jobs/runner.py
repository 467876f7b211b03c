"""What running one job means, as the work loop (`work/loop.py`) hands it a job's queue entry.

The job is claimed (marked processing), its input read from the blob store (or fetched), the
namespace runs it into a work folder, and its files are moved into the blob store (or PUT to the
caller's `copy_results_to`) before the job is marked succeeded: a job that says succeeded has
every file in place, and a run cut short (a crash, a stop) leaves the queue entry for another.
Storage away or full runs the job again later, holding its entry; the job never stays `processing`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import Code, GatewayError, error, store_trouble
from ..runtime.namespace import JobCall, JobOutput, ProgressReport, RunReport, release
from ..runtime.outbound import OutboundHttp
from ..work.queue import Work
from .blob_keys import result_key
from .blobs import disk_writes, mapped, spool
from .growing import GrowingFiles, delete_parts
from .model import InputKind, Job, JobStatus, StoredResult, media_type
from .service import JobService

log = logging.getLogger(__name__)
PROGRESS_INTERVAL = 0.5  # seconds between progress writes of one job
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # waits before running a job again while storage is away; then the last
STORE_PATIENCE_SECONDS = 3600.0  # a job storage cannot take for an hour is failed (when the failure can be written)


def retry_delay(retry: int) -> float:
    """Seconds to wait before the `retry`-th try (from 1) of a write that storage refused."""
    return RETRY_SECONDS[min(retry, len(RETRY_SECONDS)) - 1]


class JobRunner:
    """The work loop's handler of jobs: claim one, run it to a terminal state, or fail it when its
    last allowed run was cut short."""

    def __init__(self, service: JobService, outbound: OutboundHttp,
                 on_report: Callable[[RunReport], None] = lambda report: None) -> None:
        self._service = service
        self._on_report = on_report
        self._outbound = outbound
        self._progress_writes: set[asyncio.Task[None]] = set()  # held until done (the loop keeps weak references)

    async def run(self, work: Work) -> None:
        """Claim the job of `work` and run it until its outcome is recorded (nothing when it ended meanwhile)."""
        job = await self._claim(work)
        if job is not None:
            await self._run_until_recorded(job)

    async def exhausted(self, work: Work, failure: GatewayError) -> None:
        job = await self._service.store.get_job(work.id)
        if job is not None and not job.status.terminal:
            await self._service.finish(job, JobStatus.FAILED, failure=failure, reason="attempts exhausted")

    async def _claim(self, work: Work) -> Job | None:
        """Mark the job started; None when it ended meanwhile. Storage away while claiming is waited out
        holding the entry: the job has not run, so the blip must not cost it one of its attempts. A job
        still `processing` had its run cut short (a crash, a stop): it is taken over."""
        retry = 0
        while True:
            try:
                job = await self._service.store.get_job(work.id)
                if job is None or job.status.terminal:
                    return None
                cut_short = work.attempt > 0 or job.status is JobStatus.PROCESSING
                return await self._service.started(job, takeover=cut_short)
            except GatewayError as exc:
                if not store_trouble(exc):
                    raise
                retry += 1
                log.warning("job %s: %s while claiming it; trying again in %g s", work.id, exc.detail,
                            retry_delay(retry))
            await asyncio.sleep(retry_delay(retry))

    async def _run_until_recorded(self, job: Job) -> None:
        """`run`, again and again while storage is away or full: the job ends succeeded or failed once
        it is back, never left `processing`. Past STORE_PATIENCE_SECONDS it is failed as soon as the
        failure can be written."""
        since = time.monotonic()
        for retry in itertools.count(1):
            try:
                await self.execute(job)
                return
            except Exception as exc:  # noqa: BLE001 - storage trouble, or a failure that could not be recorded
                if not store_trouble(exc):
                    log.exception("job %s: its outcome could not be recorded; running it again", job.id)
                trouble = exc
            delay = retry_delay(retry)
            log.warning("job %s: %s; running it again in %g s", job.id, trouble, delay)
            await asyncio.sleep(delay)
            try:
                current = await self._service.store.get_job(job.id)
            except Exception:  # noqa: BLE001 - still away: wait again
                continue
            if current is None or current.status.terminal:
                return
            if time.monotonic() - since > STORE_PATIENCE_SECONDS:
                failure = trouble if isinstance(trouble, GatewayError) else error(Code.INTERNAL_ERROR)
                await self._fail_for_good(current, failure, "storage failed for too long")
                return

    async def _fail_for_good(self, job: Job, failure: GatewayError, reason: str) -> None:
        """Fail `job`, retrying while the store cannot record it (the runner stopping ends the wait)."""
        for retry in itertools.count(1):
            try:
                await self._service.finish(job, JobStatus.FAILED, failure=failure, reason=reason)
                return
            except Exception:  # noqa: BLE001 - logged with the job id, tried again
                log.exception("job %s: failing it could not be recorded; trying again", job.id)
            await asyncio.sleep(retry_delay(retry))

    # -- running -----------------------------------------------------------------------------

    async def execute(self, job: Job) -> None:
        """Run a claimed job to a terminal state. Storage that is away or full raises its GatewayError
        (`store_trouble`): the job is not at fault, and the caller runs it again later."""
        service = self._service
        workdir = service.blobs.workdir()
        growing = GrowingFiles(service.blobs, job.id, job.attempts)
        try:
            async with asyncio.timeout(service.settings.job_timeout):
                await service.room_to_run(job)  # an appkey over its storage quota gets no more results
                with disk_writes(f"job {job.id}"):
                    output = await self._execute(job, workdir, growing)
                self._on_report(output.report)
                result = await self._keep(job, output)
            await service.finish(job, JobStatus.SUCCEEDED, result=result, input_info=dict(output.input),
                                 cache_hit=output.cache_hit)
        except TimeoutError:
            await service.finish(job, JobStatus.FAILED, failure=error(
                Code.TIMEOUT, f"the job ran past {service.settings.job_timeout:g} s"))
        except GatewayError as exc:
            if store_trouble(exc):
                raise
            await service.finish(job, JobStatus.FAILED, failure=exc)
        except Exception:  # noqa: BLE001 - logged with the job id, answered as an internal error
            log.exception("job %s failed unexpectedly", job.id)
            await service.finish(job, JobStatus.FAILED, failure=error(Code.INTERNAL_ERROR))
        finally:
            service.blobs.discard(workdir)
            if growing.any:
                await delete_parts(service.blobs, job.id)

    async def _execute(self, job: Job, workdir: Path, growing: GrowingFiles) -> JobOutput:
        service = self._service
        assert service.namespace is not None, "jobs are only accepted when a namespace runs them"
        params = service.namespace.parse_job(job.request)
        if job.input_kind is InputKind.URL:
            download = workdir / "input.download"  # on disk as it arrives: a job's input may be gigabytes
            limit = service.max_input_bytes
            await spool(download, self._outbound.stream(job.input_ref, limit), limit)
            data: Any = await asyncio.to_thread(mapped, download)
        else:
            data = await service.blobs.read(job.input_ref)
        call = JobCall(job.id, job.appkey, params, data, workdir, self._progress(job), growing.add)
        growing.start()
        try:
            return await service.namespace.run_job(call)
        finally:
            await growing.stop()
            release(data)

    def _progress(self, job: Job) -> ProgressReport:
        """A thread-safe progress callback: writes at most every PROGRESS_INTERVAL, only upwards, with
        the stems' seconds ready when the namespace tells them."""
        loop = asyncio.get_running_loop()
        state = {"written": 0.0, "at": 0.0}

        def report(percent: float, ready: Mapping[str, float] | None = None) -> None:
            now = time.monotonic()
            if percent <= state["written"] or (percent < 100 and now - state["at"] < PROGRESS_INTERVAL):
                return
            state["written"], state["at"] = percent, now
            loop.call_soon_threadsafe(write, percent, None if ready is None else dict(ready))

        def write(progress: float, ready: Mapping[str, float] | None) -> None:
            task = asyncio.ensure_future(self._write_progress(job, progress, ready))
            self._progress_writes.add(task)
            task.add_done_callback(self._progress_writes.discard)
        return report

    async def _write_progress(self, job: Job, progress: float, ready: Mapping[str, float] | None) -> None:
        """Progress is a hint: a write that fails is skipped, as the next report or the job's finish
        writes again. Storage away, full or locked is not logged here (the job's own writes meet it)."""
        try:
            await self._service.store.set_progress(job.id, min(progress, 99.9), ready)  # 100 is the finish
        except Exception as exc:  # noqa: BLE001 - nothing awaits this write: its failure ends here
            if not store_trouble(exc):
                log.exception("job %s: progress %.1f not written", job.id, progress)
            return
        self._service.events.publish(job.id)

    async def _keep(self, job: Job, output: JobOutput) -> dict[str, StoredResult]:
        """Each stem into the blob store, or to the caller's URL for `copy_results_to`."""
        result: dict[str, StoredResult] = {}
        for stem, file in output.stems.items():
            target = job.copy_results_to.get(stem)
            if target is not None:
                await self._copy(stem, file.path, file.format, target)
                result[stem] = StoredResult(None, file.format, copied=True)
                continue
            key = result_key(job.id, stem, file.format)
            written = await self._service.blobs.put_file(key, file.path)
            result[stem] = StoredResult(key, file.format, written.size, written.sha256, round(file.duration, 6))
        return result

    async def _copy(self, stem: str, path: Path, fmt: str, url: str) -> None:
        timeout = max(60.0, path.stat().st_size / 1e6)  # at least 1 MB/s
        try:
            status = await self._outbound.send("PUT", url, path, {"Content-Type": media_type(fmt)}, timeout)
        except GatewayError as exc:
            raise error(Code.FAILED_DOWNLOAD, f"copy_results_to.{stem}: {exc.detail}") from exc
        except (OSError, TimeoutError, ValueError) as exc:
            raise error(Code.FAILED_DOWNLOAD, f"copy_results_to.{stem}: {type(exc).__name__}") from exc
        if not 200 <= status < 300:
            raise error(Code.FAILED_DOWNLOAD, f"copy_results_to.{stem} answered HTTP {status}")
