"""Prometheus metrics, in a registry of the app's own (`GET /metrics`)."""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..errors import Code
from .namespace import RunReport
from .scheduler import Scheduler, TaskStats

# Seconds: from a short clip on a warm model to a ten-minute song on a busy CPU.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
UNKNOWN = "unknown"  # the label for anything outside the known set: labels stay bounded
REJECTIONS = {Code.OVERLOADED: "overloaded", Code.UNAVAILABLE: "shutting_down", Code.TIMEOUT: "timeout",
              Code.QUOTA_EXCEEDED: "quota", Code.STORAGE_QUOTA_EXCEEDED: "storage_quota"}  # refusals before running


class Metrics:
    """Every metric the gateway exports; labels are namespaces, models and status codes only."""

    def __init__(self, namespaces: Collection[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._namespaces = frozenset(namespaces)
        r = self.registry
        self.requests = Counter("sami_gateway_requests", "Invoke requests answered",
                                ["namespace", "status_code"], registry=r)
        self.request_seconds = Histogram("sami_gateway_request_duration_seconds", "Invoke wall time",
                                         ["namespace"], buckets=DURATION_BUCKETS, registry=r)
        self.queue_wait = Histogram("sami_gateway_queue_wait_seconds", "Admission to first model call",
                                    buckets=DURATION_BUCKETS, registry=r)
        self.inference = Histogram("sami_gateway_inference_seconds", "Model time of one request",
                                   buckets=DURATION_BUCKETS, registry=r)
        self.tasks = Counter("sami_gateway_jobs", "Scheduler tasks (an invoke, or one run of a job) by outcome",
                             ["outcome"], registry=r)
        self.units = Counter("sami_gateway_model_calls", "Model calls (chunks) run", registry=r)
        self.audio = Counter("sami_gateway_audio_seconds", "Seconds of input audio processed",
                             ["namespace", "model"], registry=r)
        self.rejections = Counter("sami_gateway_rejections", "Requests refused before running",
                                  ["reason"], registry=r)
        self.in_flight = Gauge("sami_gateway_in_flight_requests", "Invoke requests being handled", registry=r)
        self.queue_depth = Gauge("sami_gateway_queue_depth", "Requests admitted by the scheduler", registry=r)
        self.queued_audio = Gauge("sami_gateway_queued_audio_seconds", "Audio-seconds admitted", registry=r)
        self.held = Gauge("sami_gateway_held_bytes", "Bytes of memory the admitted invokes hold, as each counts "
                          "them (SAMI_MAX_HELD_BYTES bounds it)", registry=r)
        self.job_transitions = Counter("sami_gateway_job_transitions", "Jobs API jobs entering a status",
                                       ["status"], registry=r)
        self.jobs_queued = Gauge("sami_gateway_jobs_queued", "Jobs API jobs waiting to run", registry=r)
        self.oldest_queued = Gauge("sami_gateway_jobs_oldest_queued_age_seconds",
                                   "Age of the oldest queued Jobs API job (0 when none)", registry=r)
        self.jobs_running = Gauge("sami_gateway_jobs_running", "Jobs API jobs running in this process", registry=r)
        self.job_failures = Counter("sami_gateway_job_failures", "Jobs API jobs failed, by status code",
                                    ["status_code"], registry=r)
        self.webhook_attempts = Counter("sami_gateway_webhook_attempts", "Webhook delivery attempts by outcome",
                                        ["outcome"], registry=r)
        self.webhook_events_dropped = Counter("sami_gateway_webhook_events_dropped",
                                              "Webhook events that could not be built; their jobs ended without "
                                              "them", registry=r)
        self.cache_hits = Counter("sami_gateway_stem_cache_hits", "Runs answered from the stem cache",
                                  ["namespace"], registry=r)
        self.cache_misses = Counter("sami_gateway_stem_cache_misses", "Runs that separated (not in the stem cache)",
                                    ["namespace"], registry=r)
        self.cache_bytes = Gauge("sami_gateway_stem_cache_bytes", "Bytes held by the stem cache", ["namespace"],
                                 registry=r)
        self.upload_bytes = Counter("sami_gateway_upload_bytes", "Bytes received by direct uploads", registry=r)
        self.model_load = Gauge("sami_gateway_model_load_seconds", "Time to load a model at start",
                                ["model"], registry=r)
        # Scale-out (SAMI_QUEUE_URL): the shared queue as every front and worker sees it.
        self.work_queued = Gauge("sami_gateway_work_queued", "Work waiting in the shared queue, by class",
                                 ["class"], registry=r)
        self.work_oldest = Gauge("sami_gateway_work_oldest_queued_age_seconds",
                                 "Age of the oldest work waiting in the shared queue, by class (0 when none)",
                                 ["class"], registry=r)
        self.work_wait = Histogram("sami_gateway_work_wait_seconds", "Enqueued until a worker took it, by class",
                                   ["class"], buckets=DURATION_BUCKETS, registry=r)
        self.workers_alive = Gauge("sami_gateway_workers_alive", "Workers whose heartbeat is current", registry=r)
        self.lease_takeovers = Counter("sami_gateway_lease_takeovers", "Work taken back from a worker whose "
                                       "lease lapsed and queued again", ["class"], registry=r)
        self.work_exhausted = Counter("sami_gateway_work_exhausted", "Work failed after its last allowed attempt",
                                      ["class"], registry=r)

    def invoke_answered(self, namespace: str, status_code: int, seconds: float) -> None:
        """One invoke answered, whatever the answer, after `seconds`."""
        label = self.namespace_label(namespace)
        self.requests.labels(label, str(status_code)).inc()
        self.request_seconds.labels(label).observe(seconds)

    def refused(self, code: Code) -> None:
        """A request refused with `code`, counted if it is a refusal before running."""
        reason = REJECTIONS.get(code)
        if reason is not None:
            self.rejections.labels(reason).inc()

    def record_run(self, namespace: str, report: RunReport) -> None:
        """A namespace's report of one successful run, counted by the process that ran it only, so
        that the fleet's sums are the work really done."""
        if not report.ran_here:
            return
        label = self.namespace_label(namespace)
        self.audio.labels(label, report.model).inc(report.input_seconds)
        if report.cache_hit is not None:
            (self.cache_hits if report.cache_hit else self.cache_misses).labels(label).inc()
        if report.cache_bytes is not None:
            self.cache_bytes.labels(label).set(report.cache_bytes)

    async def handler(self, request: web.Request) -> web.Response:
        """`GET /metrics`, in Prometheus's text format."""
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def namespace_label(self, namespace: str) -> str:
        return namespace if namespace in self._namespaces else UNKNOWN

    def watch(self, scheduler: Scheduler) -> None:
        self.queue_depth.set_function(lambda: scheduler.snapshot().tasks)
        self.queued_audio.set_function(lambda: scheduler.snapshot().queued_cost)
        self.held.set_function(lambda: scheduler.snapshot().held_bytes)

    def task_done(self, stats: TaskStats) -> None:
        """The scheduler's report of one task (called from its worker thread)."""
        self.tasks.labels(stats.outcome.value).inc()
        self.units.inc(stats.units)
        if stats.units:
            self.queue_wait.observe(stats.queue_wait)
            self.inference.observe(stats.busy)
