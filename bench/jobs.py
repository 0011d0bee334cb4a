"""The benchmark's jobs, and the polling client that runs them through the API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from bench.stack import BenchError

TERMINAL = {"succeeded", "failed", "canceled"}
# tiny-sd's registry defaults, spelled out so the direct loop runs exactly these.
WIDTH = HEIGHT = 64
STEPS = 2


def job_bodies(
    count: int, offset: int = 0, size: int = WIDTH, steps: int = STEPS
) -> list[dict[str, Any]]:
    """`count` POST /jobs bodies: distinct prompts and seeds; tiny-sd's size and steps
    unless told otherwise."""
    return [
        {
            "prompt": f"benchmark job {i}: a lighthouse on a cliff at dusk, oil painting",
            "seed": 1000 + i,
            "width": size,
            "height": size,
            "steps": steps,
        }
        for i in range(offset, offset + count)
    ]


def ts(value: str) -> float:
    """An API timestamp (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(value).timestamp()


@dataclass
class BatchRun:
    jobs: int
    started: float  # time.time() before the first POST
    submitted: float  # after the last POST answered
    seen_done: float  # when the client saw the last job terminal
    last_finished: float  # the latest finished_at (server clock, same machine)
    first_started: float  # the earliest started_at
    failed: list[str] = field(default_factory=list)
    get_requests: int = 0
    # Per job, created_at -> finished_at: what each client waited.
    latencies_s: list[float] = field(default_factory=list)
    # Per job, seconds inside the pipeline call (timings.inference_s).
    inference_s: list[float] = field(default_factory=list)

    @property
    def busy_fraction(self) -> float:
        """Pipeline time over the span the workers were at it (first start to last
        finish): how much of that span the model computed."""
        return sum(self.inference_s) / (self.last_finished - self.first_started)

    @property
    def makespan_s(self) -> float:
        """First POST sent to last job finished: what a client waits for the batch."""
        return self.last_finished - self.started

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.makespan_s

    def summary(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "makespan_s": round(self.makespan_s, 4),
            "jobs_per_s": round(self.jobs_per_s, 3),
            "submit_s": round(self.submitted - self.started, 4),
            "client_seen_s": round(self.seen_done - self.started, 4),
            "first_start_after_s": round(self.first_started - self.started, 4),
            "get_requests": self.get_requests,
            "failed": len(self.failed),
            "busy_fraction": round(self.busy_fraction, 4) if self.inference_s else None,
        }


def run_batch(
    api_url: str, bodies: list[dict[str, Any]], poll_interval_s: float = 0.02
) -> BatchRun:
    """Submit every job, then poll until all are terminal.

    Polling walks the jobs in submission order and stops a round at the first
    one still queued or running: later ones queued behind it are not asked
    about yet. That is what a sensible client of a FIFO queue does, and it keeps
    the polling load (which shares the CPU with the workers) small.
    """
    records: dict[str, dict[str, Any]] = {}
    gets = 0
    with httpx.Client(base_url=api_url, timeout=60) as http:
        started = time.time()
        ids = []
        for body in bodies:
            response = http.post("/jobs", json=body)
            if response.status_code != 202:
                raise BenchError(f"POST /jobs answered {response.status_code}: {response.text}")
            ids.append(response.json()["id"])
        submitted = time.time()
        pending = ids
        deadline = time.monotonic() + 600
        while pending:
            still: list[str] = []
            for index, job_id in enumerate(pending):
                job = http.get(f"/jobs/{job_id}").json()
                gets += 1
                if job["status"] in TERMINAL:
                    records[job_id] = job
                    continue
                still = pending[index:]
                break
            pending = still
            if pending:
                if time.monotonic() > deadline:
                    raise BenchError(f"{len(pending)} jobs still not finished after 600 s")
                time.sleep(poll_interval_s)
        seen_done = time.time()
    jobs = list(records.values())
    return BatchRun(
        jobs=len(jobs),
        started=started,
        submitted=submitted,
        seen_done=seen_done,
        last_finished=max(ts(j["finished_at"]) for j in jobs),
        first_started=min(ts(j["started_at"]) for j in jobs if j["started_at"]),
        failed=[
            f"{j['id']}: {j['status']} {j.get('error')}" for j in jobs if j["status"] != "succeeded"
        ],
        get_requests=gets,
        latencies_s=[ts(j["finished_at"]) - ts(j["created_at"]) for j in jobs],
        inference_s=[
            j["timings"]["inference_s"] for j in jobs if j["timings"].get("inference_s") is not None
        ],
    )


def run_batch_checked(api_url: str, bodies: list[dict[str, Any]]) -> BatchRun:
    run = run_batch(api_url, bodies)
    if run.failed:
        raise BenchError(f"{len(run.failed)} job(s) did not succeed, e.g. {run.failed[0]}")
    return run
