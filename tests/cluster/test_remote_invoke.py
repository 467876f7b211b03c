"""A front's stand-in for a job namespace stays one: job requests and the model listing use the inner's own."""

from __future__ import annotations

from typing import Any, cast

from sami_gateway.cluster.remote_invoke import RemoteJobNamespace, remote
from sami_gateway.namespace import JobNamespace

from ..jobs.stand_in import EchoJobs


def test_a_job_namespace_is_forwarded_with_its_listing_and_parsers() -> None:
    inner = EchoJobs()
    front = remote(inner, cast(Any, None))  # no dispatcher: nothing here is sent through the queue
    assert isinstance(front, RemoteJobNamespace) and isinstance(front, JobNamespace)
    assert front.job_models() == inner.job_models()
    params = front.parse_job({"stems": ["upper"]})
    assert params == inner.parse_job({"stems": ["upper"]}) and front.job_fields(params)["stems"] == ["upper"]
