"""Row: fair shares across API keys (docs/scheduling.md), on the real stack.

An API with keys on: A (weight 3) and B (weight 1), both in API_KEYS_FILE; two
workers on tiny-sd, jobs of 128x128 and 8 steps (long enough that a job's
duration, not the stack's per-job overhead, is what a wait is counted in).

1. A lone job among a flood. A submits FLOOD jobs; once they run, B submits one
   job at a time, TRIALS times, each after the last finished. Each B job's wait
   (created -> started) is counted in job durations (the median run time of A's
   jobs). Target: p99 within 2. Before the scheduler B waited for all of A's.
2. Shares. Both keys keep jobs waiting for `fairness_minutes`; the GPU-seconds
   (each job's time in its pipeline call) of the jobs each key finished in that
   window. Target: within 5 % of 3:1.

A key alone keeps the throughput of the queue row (the same path, no other key).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import secrets
import threading
import time
from typing import Any

import httpx

from bench.common import Result, Settings, median, percentile, verdict
from bench.jobs import TERMINAL, ts
from bench.stack import BenchError, Stack

FLOOD = 1000
TRIALS = 20
WAIT_TARGET_JOBS = 2.0
SHARE_TOLERANCE = 0.05
WEIGHTS = {"a": 3, "b": 1}
# Jobs each key keeps waiting during the shares run.
BACKLOG = 12
BODY = {"width": 128, "height": 128, "steps": 8}


def measure_fairness(stack: Stack, cfg: Settings) -> Result:
    keys = {name: f"bench-fair-{name}-{secrets.token_urlsafe(16)}" for name in WEIGHTS}
    keys_file = stack.workdir / "fair-keys"
    keys_file.write_text(
        "".join(
            f"{hashlib.sha256(key.encode()).hexdigest()} name={name} weight={WEIGHTS[name]}\n"
            for name, key in keys.items()
        )
    )
    api_url, api = stack.start_uvicorn(
        "api-fair", "api.main:app", extra_env={"API_KEYS_FILE": str(keys_file)}
    )
    stack.start_workers(2, torch_threads=cfg.queue_threads)
    try:
        clients = {
            name: httpx.Client(
                base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            for name, key in keys.items()
        }
        flood, trials = (200, 5) if cfg.quick else (FLOOD, TRIALS)
        waits, duration = _lone_job_waits(clients, flood, trials)
        minutes = cfg.fairness_minutes
        shares = _shares(clients, minutes * 60)
    finally:
        stack.stop_workers()
        stack.stop_child(api)
        stack.flush()
    p99 = percentile(waits, 99)
    ratio = shares["a"] / shares["b"] if shares["b"] else float("inf")
    off = abs(ratio / 3 - 1)
    return Result(
        name="fairness",
        measured=(
            f"B's lone job waited p50 {median(waits):.2f}, p99 {p99:.2f} job durations "
            f"behind A's {flood}; GPU-seconds A:B = {ratio:.2f}:1 over {minutes:g} min "
            f"({off:.1%} off 3:1)"
        ),
        target=f"p99 <= {WAIT_TARGET_JOBS:g} job durations; shares within 5 % of 3:1",
        status=verdict(p99 <= WAIT_TARGET_JOBS and off <= SHARE_TOLERANCE),
        details={
            "job_duration_s": round(duration, 4),
            "waits_in_jobs": [round(w, 3) for w in waits],
            "gpu_seconds": {k: round(v, 3) for k, v in shares.items()},
            "ratio": round(ratio, 4),
            "minutes": minutes,
        },
        notes=[
            f"two workers, tiny-sd {BODY['width']}x{BODY['height']}, {BODY['steps']} steps; "
            f"keys A (weight 3) and B (weight 1) in API_KEYS_FILE; {trials} lone jobs of B"
        ],
    )


def _lone_job_waits(
    clients: dict[str, httpx.Client], count: int, trials: int
) -> tuple[list[float], float]:
    """B's waits, in durations of A's jobs, with A's flood queued; then A's rest canceled."""
    a, b = clients["a"], clients["b"]
    flood = _submit_many(a, count, "flood")
    _until(lambda: _job(a, flood[2])["status"] != "queued", "A's flood to start")
    waits_s = []
    for trial in range(trials):
        job = b.post("/jobs", json={**BODY, "prompt": f"lone {trial}", "seed": trial}).json()
        done = _finished(b, job["id"])
        waits_s.append(ts(done["started_at"]) - ts(done["created_at"]))
    ran = [j for j in map(lambda i: _job(a, i), flood[:200]) if j["status"] == "succeeded"]
    if not ran:
        raise BenchError("none of A's jobs ran during the trials")
    duration = median([ts(j["finished_at"]) - ts(j["started_at"]) for j in ran])
    _cancel_all(a, flood)
    return [w / duration for w in waits_s], duration


def _shares(clients: dict[str, httpx.Client], seconds: float) -> dict[str, float]:
    """Both keys keep BACKLOG jobs waiting; each key's GPU-seconds finished in the window."""
    stop = threading.Event()
    submitted: dict[str, list[str]] = {name: [] for name in clients}

    def feed(name: str) -> None:
        client, n = clients[name], 0
        while not stop.is_set():
            queued = client.get("/me").json()["usage"]["queued"]
            for _ in range(max(0, BACKLOG - queued)):
                body = {**BODY, "prompt": f"share {name} {n}", "seed": n}
                submitted[name].append(client.post("/jobs", json=body).json()["id"])
                n += 1
            stop.wait(0.2)

    feeders = [threading.Thread(target=feed, args=(name,), daemon=True) for name in clients]
    for feeder in feeders:
        feeder.start()
    time.sleep(5)  # both keys saturating before the window opens
    opened = time.time()
    time.sleep(seconds)
    closed = time.time()
    stop.set()
    for feeder in feeders:
        feeder.join()
    totals = {}
    for name, client in clients.items():
        jobs = [_job(client, job_id) for job_id in submitted[name]]
        totals[name] = sum(
            j["timings"]["inference_s"] or 0
            for j in jobs
            if j["status"] == "succeeded" and opened <= ts(j["finished_at"]) <= closed
        )
        _cancel_all(client, [j["id"] for j in jobs if j["status"] not in TERMINAL])
    return totals


def _submit_many(client: httpx.Client, count: int, tag: str) -> list[str]:
    def post(i: int) -> str:
        body = {**BODY, "prompt": f"{tag} {i}", "seed": i}
        response = client.post("/jobs", json=body)
        if response.status_code != 202:
            raise BenchError(f"POST /jobs answered {response.status_code}: {response.text}")
        return str(response.json()["id"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(post, range(count)))


def _cancel_all(client: httpx.Client, job_ids: list[str]) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda j: client.post(f"/jobs/{j}/cancel"), job_ids))


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    return client.get(f"/jobs/{job_id}").json()  # type: ignore[no-any-return]


def _finished(client: httpx.Client, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (job := _job(client, job_id))["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise BenchError(f"job {job_id} not finished after {timeout_s} s")
        time.sleep(0.02)
    if job["status"] != "succeeded":
        raise BenchError(f"job {job_id} ended {job['status']}: {job.get('error')}")
    return job


def _until(condition: Any, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not seen after {timeout_s} s")
        time.sleep(0.05)
