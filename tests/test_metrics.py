"""Metrics: bounded labels, what record_run, task_done and watch count, /metrics text, a registry per instance."""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from sami_gateway.runtime.metrics import UNKNOWN, Metrics
from sami_gateway.runtime.namespace import RunReport
from sami_gateway.runtime.scheduler import Outcome, Scheduler, Snapshot, TaskStats

NS = "MusicSourceSeparate"


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_namespace_label_is_bounded_to_the_known_namespaces() -> None:
    metrics = Metrics([NS, "Other"])
    assert [metrics.namespace_label(name) for name in (NS, "Other", "Secret-Name", "", NS.lower())] == \
        [NS, "Other", UNKNOWN, UNKNOWN, UNKNOWN]


def test_record_run_counts_audio_seconds_by_namespace_and_model() -> None:
    metrics = Metrics([NS])
    metrics.record_run(NS, RunReport("htdemucs", 2.5))
    metrics.record_run(NS, RunReport("htdemucs", 1.25, {"decode": 0.1}))
    metrics.record_run(NS, RunReport("mdx", 4.0))
    metrics.record_run("Elsewhere", RunReport("htdemucs", 3.0))
    audio = "sami_gateway_audio_seconds_total"
    assert value(metrics, audio, namespace=NS, model="htdemucs") == 3.75
    assert value(metrics, audio, namespace=NS, model="mdx") == 4.0
    assert value(metrics, audio, namespace=UNKNOWN, model="htdemucs") == 3.0
    assert value(metrics, audio, namespace="Elsewhere", model="htdemucs") is None


def test_job_done_counts_outcomes_model_calls_and_times() -> None:
    metrics = Metrics([NS])
    metrics.task_done(TaskStats(Outcome.DONE, queue_wait=0.5, busy=2.0, units=3))
    metrics.task_done(TaskStats(Outcome.DONE, queue_wait=0.25, busy=1.0, units=1))
    metrics.task_done(TaskStats(Outcome.TIMEOUT, queue_wait=0.125, busy=4.0, units=2))
    metrics.task_done(TaskStats(Outcome.CANCELLED, queue_wait=9.0, busy=0.0, units=0))  # never ran: no times
    jobs = "sami_gateway_jobs_total"
    assert [value(metrics, jobs, outcome=outcome.value) for outcome in Outcome] == [2.0, None, 1.0, 1.0]
    assert value(metrics, "sami_gateway_model_calls_total") == 6.0
    assert value(metrics, "sami_gateway_queue_wait_seconds_count") == 3.0
    assert value(metrics, "sami_gateway_queue_wait_seconds_sum") == 0.875
    assert value(metrics, "sami_gateway_inference_seconds_count") == 3.0
    assert value(metrics, "sami_gateway_inference_seconds_sum") == 7.0
    assert value(metrics, "sami_gateway_queue_wait_seconds_bucket", le="0.5") == 3.0


class StubScheduler:
    def __init__(self) -> None:
        self.now = Snapshot(tasks=0, queued_cost=0.0, saturated=False, units_done=0)

    def snapshot(self) -> Snapshot:
        return self.now


def test_watch_reads_the_scheduler_at_scrape_time() -> None:
    metrics = Metrics([NS])
    scheduler = StubScheduler()
    metrics.watch(cast(Scheduler, scheduler))
    assert (value(metrics, "sami_gateway_queue_depth"), value(metrics, "sami_gateway_queued_audio_seconds")) == \
        (0.0, 0.0)
    scheduler.now = Snapshot(tasks=3, queued_cost=42.5, saturated=False, units_done=7, held_bytes=2**30)
    assert (value(metrics, "sami_gateway_queue_depth"), value(metrics, "sami_gateway_queued_audio_seconds"),
            value(metrics, "sami_gateway_held_bytes")) == (3.0, 42.5, 2.0**30)


async def test_handler_answers_prometheus_text(aiohttp_client: Any) -> None:
    metrics = Metrics([NS])
    metrics.record_run(NS, RunReport("htdemucs", 2.0))
    metrics.rejections.labels("overloaded").inc()
    app = web.Application()
    app.router.add_get("/metrics", metrics.handler)
    client = await aiohttp_client(app)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    text = await response.text()
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert all(name.startswith("sami_gateway_") for name in families)
    assert {"sami_gateway_requests", "sami_gateway_request_duration_seconds", "sami_gateway_queue_wait_seconds",
            "sami_gateway_inference_seconds", "sami_gateway_jobs", "sami_gateway_model_calls",
            "sami_gateway_audio_seconds", "sami_gateway_rejections", "sami_gateway_in_flight_requests",
            "sami_gateway_queue_depth", "sami_gateway_queued_audio_seconds",
            "sami_gateway_model_load_seconds"} <= set(families)
    assert 'sami_gateway_audio_seconds_total{model="htdemucs",namespace="MusicSourceSeparate"} 2.0' in text
    assert 'sami_gateway_rejections_total{reason="overloaded"} 1.0' in text
    assert "python_gc" not in text and "process_cpu" not in text  # the default collectors are not in it


def test_each_instance_has_its_own_registry() -> None:
    first, second = Metrics([NS]), Metrics([NS])  # the same names twice: a shared registry would refuse this
    assert first.registry is not second.registry
    first.units.inc(5)
    assert value(first, "sami_gateway_model_calls_total") == 5.0
    assert value(second, "sami_gateway_model_calls_total") == 0.0
    assert REGISTRY.get_sample_value("sami_gateway_model_calls_total") is None
