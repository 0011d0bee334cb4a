"""Row: what Prometheus metrics cost the API.

1. Scrape time of GET /metrics with 10,000 queued jobs and 50 live workers
   (written straight into the run's Redis, as the API and workers write them):
   the cluster gauges come from one Lua script over all of it.
2. The HTTP metrics' cost on GET /jobs/{id}, two ways:
   - the middleware's own time per request, timed in this process over 100,000
     calls around a do-nothing app, as a share of one GET /jobs/{id} (1 / its
     requests/s): repeatable on a busy machine, and the verdict;
   - requests/s of two API processes on the same Redis, one with
     METRICS_ENABLED=false (no middleware), loaded in turn: the end-to-end
     check, but on 2 shared cores its noise (several %) exceeds the effect.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import httpx

from bench.api_load import hammer
from bench.common import Result, Settings, verdict
from bench.jobs import job_bodies
from bench.stack import MODEL, BenchError, Stack
from shared.constants import PRIORITIES, model_queue
from shared.jobs import GenerationParams, JobRecord, utcnow
from shared.store import JobStore
from shared.workers import WorkerInfo, worker_key

QUEUED_JOBS = 10_000
LIVE_WORKERS = 50
SCRAPES = 50
SCRAPE_TARGET_MS = 50.0
HTTP_COST_TARGET = 0.05


def measure_metrics(stack: Stack, cfg: Settings) -> Result:
    _fill(stack)
    try:
        scrape_ms = _scrape_times(stack.api_url + "/metrics", SCRAPES)
        on, off, job_url = _http_cost(stack, cfg)
    finally:
        stack.flush()
    p50, p99 = statistics.median(scrape_ms), sorted(scrape_ms)[int(len(scrape_ms) * 0.99)]
    middleware_us = middleware_overhead_us()
    cost = middleware_us * off / 1e6
    ab_cost = 1 - on / off
    return Result(
        name="metrics",
        measured=(
            f"scrape p50 {p50:.1f} ms, p99 {p99:.1f} ms ({QUEUED_JOBS} queued, "
            f"{LIVE_WORKERS} workers); HTTP metrics {middleware_us:.1f} us/request = {cost:.1%} "
            f"of a GET /jobs/{{id}} (A/B: {on:.0f} vs {off:.0f} req/s, {ab_cost:+.1%})"
        ),
        target=f"scrape < {SCRAPE_TARGET_MS:.0f} ms, HTTP metrics cost < {HTTP_COST_TARGET:.0%}",
        status=verdict(p50 < SCRAPE_TARGET_MS and cost < HTTP_COST_TARGET),
        details={
            "scrape_ms": {"p50": round(p50, 2), "p99": round(p99, 2), "n": len(scrape_ms)},
            "queued_jobs": QUEUED_JOBS,
            "live_workers": LIVE_WORKERS,
            "get_with_metrics_rps": round(on, 1),
            "get_without_metrics_rps": round(off, 1),
            "middleware_us_per_request": round(middleware_us, 2),
            "http_metrics_cost": round(cost, 4),
            "http_metrics_cost_ab": round(ab_cost, 4),
            "job_url": job_url,
        },
        notes=[
            "scrape: one GET /metrics after another on a keep-alive connection; the cluster "
            "gauges are one Lua script (SCAN of worker records, ZCOUNT per queue and priority)",
            "HTTP metrics cost: the middleware's in-process time per request x GET /jobs/{id} "
            "requests/s without it; the A/B of two API processes loaded in turn is noisier "
            "than the effect on a shared 2-core machine (it can read negative)",
        ],
    )


def middleware_overhead_us(calls: int = 100_000) -> float:
    """Microseconds MetricsMiddleware adds to one request, around an app that does nothing."""
    from api.metrics import ApiMetrics, MetricsMiddleware

    class Route:
        path = "/jobs/{job_id}"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["route"] = Route
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def discard(message: Any) -> None:
        return None

    async def per_call(target: Any) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await target({"type": "http", "method": "GET"}, None, discard)
        return (time.perf_counter() - started) / calls

    async def both() -> float:
        wrapped = MetricsMiddleware(app, ApiMetrics())  # type: ignore[arg-type]
        await per_call(wrapped)  # warm: the label children are cached
        return (await per_call(wrapped) - await per_call(app)) * 1e6

    return max(0.0, asyncio.run(both()))


def _fill(stack: Stack) -> None:
    """10,000 queued jobs across priorities and 50 live worker records, in one pipeline."""
    with stack.redis() as client:
        store = JobStore(client, 3600)
        now = utcnow()
        params = GenerationParams(
            prompt="bench",
            negative_prompt=None,
            width=64,
            height=64,
            steps=2,
            guidance_scale=7.5,
            seed=1,
            num_images=1,
        )
        priorities = list(PRIORITIES)
        for i in range(QUEUED_JOBS):
            record = JobRecord(
                id=uuid.uuid4().hex,
                created_at=now,
                model=MODEL,
                queue=model_queue(MODEL),
                params=params,
                priority=priorities[i % len(priorities)],
            )
            store.create(record)
        pipe = client.pipeline(transaction=False)
        for i in range(LIVE_WORKERS):
            info = WorkerInfo(name=f"bench-fake-{i}@host", state="ready", model=MODEL)
            pipe.set(worker_key(info.name), info.model_dump_json(), ex=600)
        pipe.execute()


def _scrape_times(url: str, scrapes: int) -> list[float]:
    times = []
    with httpx.Client(timeout=30) as http:
        http.get(url).raise_for_status()  # warm: script cached, connection open
        for _ in range(scrapes):
            started = time.perf_counter()
            response = http.get(url)
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return times


def _http_cost(stack: Stack, cfg: Settings) -> tuple[float, float, str]:
    body = job_bodies(1)[0]
    response = httpx.post(stack.api_url + "/jobs", json=body, timeout=10)
    if response.status_code != 202:
        raise BenchError(f"POST /jobs answered {response.status_code}: {response.text}")
    job_url = f"/jobs/{response.json()['id']}"
    off_url, off_child = stack.start_uvicorn(
        "api-no-metrics", "api.main:app", extra_env={"METRICS_ENABLED": "false"}
    )
    try:
        conns, duration = cfg.api_connections, cfg.api_duration_s
        # Twice each, alternating, so that a slower stretch of the machine hits both.
        on_runs, off_runs = [], []
        for _ in range(3):
            on_runs.append(hammer(stack.api_url + job_url, "GET", None, conns, duration))
            off_runs.append(hammer(off_url + job_url, "GET", None, conns, duration))
    finally:
        stack.stop_child(off_child)
    for load in on_runs + off_runs:
        if load.errors:
            raise BenchError(f"GET {job_url}: {load.errors} failed of {load.requests}")
    on = statistics.median(load.requests_per_s for load in on_runs)
    off = statistics.median(load.requests_per_s for load in off_runs)
    return on, off, json.dumps(job_url)[1:-1]
