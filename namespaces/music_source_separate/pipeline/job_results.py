"""A job's result files: each stem it asks for, derived from its one separation, encoded into its folder.

Runs on the jobs' audio thread, one stem at a time, so that only one stem's arrays are alive
beside the separation; reports progress after each file.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sami_gateway.runtime.namespace import ProgressReport, StemFile

from ..audio.convert import output_frames
from ..codes import translated
from ..requests.job_params import JobParams
from ..requests.stems import SAMI_STEMS, demucs_stem, render, sami_target
from .separation import Work

SEPARATION_SHARE = 90.0  # progress (of 100) at the end of the separation; encoding the files is the rest


class JobProgress:
    """Progress reported to the job, only ever growing: the separation's share, then each file's; with
    the seconds of each stem written so far."""

    def __init__(self, report: ProgressReport, stems: Sequence[str]) -> None:
        self._report = report
        self._files = max(1, len(stems))
        self._ready = dict.fromkeys(stems, 0.0)
        self._written = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def _send(self, value: float) -> None:
        with self._lock:
            if value <= self._last:
                return
            self._last = value
            ready = dict(self._ready)
        self._report(value, ready)

    def separated(self, share: float, ready: Mapping[str, float] | None = None) -> None:
        """`share` (0..1) of the separation's model calls are done, and `ready` seconds of some stems
        written (a job separated span by span)."""
        if ready:
            with self._lock:
                for stem, seconds in ready.items():
                    self._ready[stem] = max(self._ready.get(stem, 0.0), seconds)
        self._send(round(SEPARATION_SHARE * share, 2))

    def file_written(self, stem: str, seconds: float) -> None:
        """`stem`'s file is complete: all its `seconds`."""
        with self._lock:
            self._written += 1
            self._ready[stem] = seconds
            written = self._written
        self._send(round(SEPARATION_SHARE + (100.0 - SEPARATION_SHARE) * written / self._files, 2))


def _stem_samples(params: JobParams, stem: str, work: Work) -> np.ndarray:
    assert work.mix is not None
    if params.sami is not None:
        return sami_target(params.sami, SAMI_STEMS[stem], work.sources, work.mix, work.rate)
    return demucs_stem(stem, work.sources, work.mix)


def write_stems(params: JobParams, work: Work, workdir: Path, progress: JobProgress) -> dict[str, StemFile]:
    """Every stem of `params` as a file `<stem>.<format>` in `workdir`; empties `work`."""
    assert work.info is not None
    out = params.output
    frames = output_frames(work.info.frames, work.info.sample_rate, out.sample_rate)
    files: dict[str, StemFile] = {}
    try:
        progress.separated(1.0)
        for stem in params.stems:
            with translated():
                data = render(_stem_samples(params, stem, work), work.rate, frames, out.sample_rate,
                              out.channels, out.format)
            path = workdir / f"{stem}.{out.format}"
            path.write_bytes(data)
            files[stem] = StemFile(path, out.format, frames / out.sample_rate)
            progress.file_written(stem, frames / out.sample_rate)
    finally:
        work.clear()
    return files
