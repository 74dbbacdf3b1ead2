"""The server's Prometheus metrics, through prometheus_client: request counts by route and status, errors by
code, request latency, batch sizes and batch decode time, the model being served, the admission queue
(depth, shed requests, deadline drops) and the standard process metrics. Each app has its own registry, so
several servers in one process (tests, benchmarks) keep their counts apart."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format every Prometheus scrapes
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The server's metrics; ``render`` gives the /metrics page. prometheus_client is thread-safe: updates
    may come from the event loop and the decode thread alike."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=r)
        self.requests = Counter("genrec_requests", "HTTP requests by route, method and status.",
                                ("route", "method", "status"), registry=r)
        self.errors = Counter("genrec_request_errors", "Refused or failed requests by route and error code.",
                              ("route", "code"), registry=r)
        self.latency = Histogram("genrec_request_duration_seconds", "Time from request to response, by route.",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("genrec_batch_size", "Requests decoded together in one batched beam search.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("genrec_batch_duration_seconds", "Wall time of one batched decode.",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.reloads = Counter("genrec_reloads", "Model reloads by outcome (ok, failed, refused).", ("outcome",),
                               registry=r)
        self.model = Gauge("genrec_model_info", "The model being served (value 1).",
                           ("model_version", "codebook_version", "run"), registry=r)
        self.queue_depth = Gauge("genrec_queue_depth", "Retrieval requests waiting for a batch.", registry=r)
        self.queue_limit = Gauge("genrec_queue_limit", "Most retrieval requests that may wait (--max-queue).",
                                 registry=r)
        self.shed = Counter("genrec_shed_requests", "Retrieval requests refused with 503 before queuing, by reason "
                            "(queue_full, deadline_unreachable, shutting_down).", ("reason",), registry=r)
        self.deadline_drops = Counter("genrec_deadline_drops", "Queued retrieval requests whose deadline passed "
                                      "before they could be decoded (503, never decoded).", registry=r)
        for reason in ("queue_full", "deadline_unreachable", "shutting_down"):
            self.shed.labels(reason)  # every series from the start, at 0
        for outcome in ("ok", "failed", "refused"):
            self.reloads.labels(outcome)

    def watch_queue(self, depth: Callable[[], float], limit: int) -> None:
        """Read the queue depth from ``depth`` at every scrape."""
        self.queue_depth.set_function(depth)
        self.queue_limit.set(limit)

    def observe_request(self, route: str, method: str, status: int, seconds: float, error: str | None) -> None:
        """One finished request; ``error`` is its error code when it was refused or failed."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if error is not None or status >= 400:
            self.errors.labels(route, error or f"http_{status}").inc()

    def observe_batch(self, size: int, seconds: float) -> None:
        """One batched decode of ``size`` requests."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def observe_shed(self, reason: str) -> None:
        self.shed.labels(reason).inc()

    def observe_deadline_drop(self) -> None:
        self.deadline_drops.inc()

    def observe_reload(self, outcome: str) -> None:
        """A reload that went ``ok``, ``failed`` (the old model kept serving) or was ``refused`` (not allowed)."""
        self.reloads.labels(outcome).inc()

    def set_model(self, model_version: str, codebook_version: str, run: str) -> None:
        """Record the model now served (the previous one's series is dropped)."""
        self.model.clear()
        self.model.labels(model_version, codebook_version, run).set(1)

    def render(self) -> str:
        """The exposition text (format 0.0.4)."""
        return generate_latest(self.registry).decode()
