"""The one home of the blob store's key layout: where a job's input, its results and an upload's
bytes are kept, on local disk and in S3 alike (`inputs/<job>`, `results/<job>/<stem>.<ext>`,
`uploads/<id>`, and while a job runs the parts of the stems it is writing,
`results/<job>/partial/<attempt>/<stem>/<index>`)."""

from __future__ import annotations

import uuid

INPUTS, RESULTS, UPLOADS = "inputs", "results", "uploads"
JOB_AREAS = (INPUTS, RESULTS)  # the folders named by job id


def input_key(job_id: str) -> str:
    return f"{INPUTS}/{job_id}"


def results_prefix(job_id: str) -> str:
    return f"{RESULTS}/{job_id}"


def result_key(job_id: str, stem: str, fmt: str) -> str:
    return f"{RESULTS}/{job_id}/{stem}.{fmt}"


def parts_prefix(job_id: str) -> str:
    """Every part of the stems a job is writing, of all its runs."""
    return f"{RESULTS}/{job_id}/partial"


def part_key(job_id: str, attempt: int, stem: str, index: int) -> str:
    """The `index`th part of a stem being written by the job's `attempt`th run."""
    return f"{RESULTS}/{job_id}/partial/{attempt}/{stem}/{index:06d}"


def upload_key(upload_id: str) -> str:
    return f"{UPLOADS}/{upload_id}"


def form_file_key() -> str:
    """A multipart form's file, kept as an upload nobody can PUT to until its job takes it."""
    return upload_key(f"form_{uuid.uuid4().hex}")
