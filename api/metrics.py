"""The API's Prometheus metrics: its HTTP traffic, the jobs it accepted, and the cluster.

HTTP and submission counts live in a registry of the app's own (each app, a test's
included, counts its own). The cluster gauges (queue depth, running jobs,
workers, webhook backlog) are read from Redis at scrape time, in one round trip
(shared.cluster_stats), so every API replica reports the same numbers.

Labels hold route templates (`/jobs/{job_id}`), methods, statuses, model names
and priorities: never a job id, a prompt or a raw path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.cluster_stats import ClusterStats

# Counters and histograms without a `_created` series each: half the series, and
# Prometheus does not use them.
disable_created_metrics()  # type: ignore[no-untyped-call]


# The route label of requests no route matched: their paths are whatever a
# client (or a scanner) sent, and must not become label values.
UNMATCHED = "unmatched"
# Request latencies: from a cached poll's milliseconds to a long `Prefer: wait`.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Methods outside this set (a scanner's inventions) share one label value.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

__all__ = ["CONTENT_TYPE_LATEST", "ApiMetrics", "MetricsMiddleware"]


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "darkroom_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "darkroom_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )
        self.submitted = Counter(
            "darkroom_jobs_submitted",
            "Jobs accepted (202), by model and priority.",
            ["model", "priority"],
            registry=self.registry,
        )
        self._http: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def http_children(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The request counter and duration histogram for one kind of request.

        Cached: labels() validates and locks on every call, which on the API's
        hottest path (a poll of GET /jobs/{id}) costs as much as the counting.
        Bounded: routes are the app's templates, methods the standard set.
        """
        key = (method if method in METHODS else "other", route, status)
        children = self._http.get(key)
        if children is None:
            children = (
                self.requests.labels(key[0], route, str(status)),
                self.duration.labels(key[0], route),
            )
            self._http[key] = children
        return children

    def render(self, cluster: ClusterStats | None) -> bytes:
        """The text exposition of this API's metrics and the cluster's.

        `cluster` None: Redis could not be read; darkroom_redis_up says so and
        the cluster gauges are left out (a stale or zero value would mislead).
        """
        families = list(self._own_families())
        redis_up = GaugeMetricFamily(
            "darkroom_redis_up", "1 if this scrape could read Redis, else 0."
        )
        redis_up.add_metric([], 0 if cluster is None else 1)
        families.append(redis_up)
        if cluster is not None:
            families += cluster_families(cluster)
        return generate_latest(_Families(families))  # type: ignore[arg-type,unused-ignore]

    def _own_families(self) -> Iterable[Metric]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Several uvicorn worker processes: add up every process's files.
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return merged.collect()
        return self.registry.collect()


def cluster_families(stats: ClusterStats) -> list[Metric]:
    queued = GaugeMetricFamily(
        "darkroom_queue_depth",
        "Jobs waiting in a queue, by model (any: named no model) and priority.",
        labels=["model", "priority"],
    )
    for (model, priority), count in sorted(stats.queued.items()):
        queued.add_metric([model, priority], count)
    running = GaugeMetricFamily(
        "darkroom_jobs_running", "Jobs running, by the model of their worker.", labels=["model"]
    )
    for model, count in sorted(stats.running.items()):
        running.add_metric([model], count)
    workers = GaugeMetricFamily(
        "darkroom_workers",
        "Live workers by the model they serve and state.",
        labels=["model", "state"],
    )
    for (model, state), count in sorted(stats.workers.items()):
        workers.add_metric([model, state], count)
    serving = GaugeMetricFamily(
        "darkroom_workers_serving",
        "Live workers that may run a model's jobs: holding it, or loading it on demand.",
        labels=["model"],
    )
    for model, count in sorted(stats.serving.items()):
        serving.add_metric([model], count)
    backlog = GaugeMetricFamily(
        "darkroom_webhook_deliveries_pending",
        "Webhook deliveries queued or waiting for their retry time.",
        value=stats.webhook_backlog,
    )
    return [queued, running, workers, serving, backlog]


class _Families:
    """What generate_latest needs of a registry: collect()."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template.

    Plain ASGI, not BaseHTTPMiddleware: no extra task or stream copy per request
    on the hot path. The route is known only after routing, so it is read from
    the scope once the response has started.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            count, timing = self.metrics.http_children(scope["method"], template, status)
            count.inc()
            timing.observe(time.perf_counter() - started)
