"""Row 5: submit-to-running on an idle worker.

One job at a time: time.time() just before POST /jobs is sent, to the job's
started_at, which the worker stamps when it claims the job (the queued ->
running transition in Redis). Both clocks are this machine's. The next job is
sent only once the previous one finished and the worker is idle again.
"""

from __future__ import annotations

import time

import httpx

from bench.common import Result, Settings, median, percentile, verdict
from bench.jobs import TERMINAL, job_bodies, ts
from bench.stack import BenchError, Stack

P50_TARGET_MS = 10.0
IDLE_GAP_S = 0.05


def measure_latency(stack: Stack, cfg: Settings) -> Result:
    stack.start_workers(1, torch_threads=cfg.queue_threads)
    samples: list[dict[str, float]] = []
    try:
        with httpx.Client(base_url=stack.api_url, timeout=30) as http:
            warmup = 3
            for index, body in enumerate(job_bodies(cfg.latency_jobs + warmup, offset=200_000)):
                sample = _one(http, body)
                if index >= warmup:
                    samples.append(sample)
                time.sleep(IDLE_GAP_S)
    finally:
        stack.stop_workers()
        stack.flush()
    total = [s["to_running_ms"] for s in samples]
    api = [s["to_created_ms"] for s in samples]
    queue = [s["created_to_running_ms"] for s in samples]
    p50, p99 = median(total), percentile(total, 99)
    return Result(
        name="latency",
        measured=f"submit->running p50 {p50:.1f} ms, p99 {p99:.1f} ms",
        target=f"p50 < {P50_TARGET_MS:g} ms",
        status=verdict(p50 < P50_TARGET_MS),
        details={
            "jobs": len(samples),
            "p50_ms": round(p50, 3),
            "p99_ms": round(p99, 3),
            "max_ms": round(max(total), 3),
            "post_to_created_p50_ms": round(median(api), 3),
            "created_to_running_p50_ms": round(median(queue), 3),
            "created_to_running_p99_ms": round(percentile(queue, 99), 3),
            "samples_ms": [round(x, 3) for x in total],
        },
        notes=[
            f"p50 split: POST start -> record created {median(api):.1f} ms (API), "
            f"created -> claimed by the worker {median(queue):.1f} ms (broker + worker); "
            f"{len(samples)} jobs, one at a time, worker idle for {IDLE_GAP_S * 1000:.0f} ms "
            "before each"
        ],
    )


def _one(http: httpx.Client, body: dict[str, object]) -> dict[str, float]:
    sent = time.time()
    response = http.post("/jobs", json=body)
    if response.status_code != 202:
        raise BenchError(f"POST /jobs answered {response.status_code}: {response.text}")
    job = response.json()
    deadline = time.monotonic() + 60
    while job["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise BenchError(f"job {job['id']} not finished after 60 s")
        time.sleep(0.01)
        job = http.get(f"/jobs/{job['id']}").json()
    if job["status"] != "succeeded" or not job["started_at"]:
        raise BenchError(f"job {job['id']} {job['status']}: {job.get('error')}")
    created, started = ts(job["created_at"]), ts(job["started_at"])
    return {
        "to_running_ms": (started - sent) * 1000,
        "to_created_ms": (created - sent) * 1000,
        "created_to_running_ms": (started - created) * 1000,
    }
