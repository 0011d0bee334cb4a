"""Row: the scheduler at scale, 10 to 1,000 keys with queued jobs (docs/scheduling.md).

For each number of keys, an API with that many keys (API_KEYS_FILE) and 50
simulated workers: threads that ask the scheduler for a job, claim it, write
progress twice, "run" it (an engine that sleeps) and record its success, as a
worker does, on the same Redis calls (shared.scheduler, the job store).

- The dispatch decision: the reserve script's round trip, timed from this
  process, with every key holding queued jobs (p50 / p99; target under 2 ms at
  1,000 keys).
- Redis CPU per job over its whole life (submitted through the API, claimed,
  two progress writes, finished, polled three times through the API): the
  change of Redis's own `INFO cpu` (used_cpu_sys + used_cpu_user) and of its
  `INFO commandstats` calls, over the jobs (target at most 1 ms a job).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from bench.common import Result, Settings, median, percentile, verdict
from bench.stack import BenchError, Stack
from shared.jobs import JobStatus
from shared.redis_replies import reply_text
from shared.scheduler import Scheduler
from shared.store import JobStore

KEY_COUNTS = (10, 100, 1000)
WORKERS = 50
ENGINE_S = 0.02
DECISIONS = 300
DECISION_TARGET_MS = 2.0
CPU_TARGET_MS = 1.0
QUEUES = ["darkroom.model.tiny-sd", "darkroom.default"]
BODY = {"model": "tiny-sd", "width": 64, "height": 64, "steps": 1}


@dataclass
class Scale:
    keys: int
    decision_p50_ms: float
    decision_p99_ms: float
    cpu_ms_per_job: float
    commands_per_job: float
    jobs: int


def measure_scale(stack: Stack, cfg: Settings) -> Result:
    counts = (10, 100) if cfg.quick else KEY_COUNTS
    rows = [_at(stack, keys, jobs=200 if cfg.quick else 1000) for keys in counts]
    top = rows[-1]
    return Result(
        name="scale",
        measured="; ".join(
            f"{r.keys} keys: decision p50 {r.decision_p50_ms:.2f} ms, p99 "
            f"{r.decision_p99_ms:.2f} ms, Redis {r.cpu_ms_per_job:.3f} ms CPU and "
            f"{r.commands_per_job:.0f} commands per job"
            for r in rows
        ),
        target=f"at {top.keys} keys: decision < {DECISION_TARGET_MS:g} ms, "
        f"Redis CPU <= {CPU_TARGET_MS:g} ms per job",
        status=verdict(
            top.decision_p99_ms < DECISION_TARGET_MS and top.cpu_ms_per_job <= CPU_TARGET_MS
        ),
        details={"rows": [vars(r) for r in rows]},
        notes=[
            f"{WORKERS} simulated workers (an engine that sleeps {ENGINE_S * 1000:.0f} ms), "
            "jobs submitted and polled three times each through the API; decision timed "
            "from this process (one loopback round trip included)"
        ],
    )


def _at(stack: Stack, keys: int, jobs: int) -> Scale:
    stack.flush()
    tokens = [f"bench-scale-{i}-{secrets.token_urlsafe(12)}" for i in range(keys)]
    keys_file = stack.workdir / f"scale-keys-{keys}"
    keys_file.write_text("".join(f"{hashlib.sha256(t.encode()).hexdigest()}\n" for t in tokens))
    api_url, api = stack.start_uvicorn(
        f"api-scale-{keys}", "api.main:app", extra_env={"API_KEYS_FILE": str(keys_file)}
    )
    client = stack.redis()
    try:
        # Every key holds queued jobs while the decision is timed.
        _submit(api_url, tokens, [tokens[i % keys] for i in range(DECISIONS + 2 * keys)])
        decisions = _time_decisions(client)
        _drain(client)
        before = _redis_counters(client)
        ids = _submit(api_url, tokens, [tokens[i % keys] for i in range(jobs)])
        _run_lives(client, api_url, tokens, ids)
        after = _redis_counters(client)
    finally:
        stack.stop_child(api)
        client.close()
    return Scale(
        keys=keys,
        decision_p50_ms=round(median(decisions), 3),
        decision_p99_ms=round(percentile(decisions, 99), 3),
        cpu_ms_per_job=round((after[0] - before[0]) * 1000 / len(ids), 4),
        commands_per_job=round((after[1] - before[1]) / len(ids), 1),
        jobs=len(ids),
    )


def _submit(api_url: str, tokens: list[str], owners: list[str]) -> list[str]:
    def post(pair: tuple[int, str]) -> str:
        index, token = pair
        response = http.post(
            "/jobs",
            json={**BODY, "prompt": f"scale {index}", "seed": index},
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code != 202:
            raise BenchError(f"POST /jobs answered {response.status_code}: {response.text}")
        return str(response.json()["id"])

    with (
        httpx.Client(base_url=api_url, timeout=60) as http,
        concurrent.futures.ThreadPoolExecutor(16) as pool,
    ):
        return list(pool.map(post, enumerate(owners)))


def _time_decisions(client: redis.Redis) -> list[float]:
    """Milliseconds per reserve (then let the job go, so the keys stay queued)."""
    scheduler = Scheduler(client, 600)
    store = JobStore(client, 3600)
    took = []
    for n in range(DECISIONS):
        started = time.perf_counter()
        reservation = scheduler.reserve(f"timer-{n % WORKERS}@bench", QUEUES)
        took.append((time.perf_counter() - started) * 1000)
        if reservation is None:
            raise BenchError("the scheduler had no job while every key had some queued")
        store.transition(reservation.job_id, JobStatus.RUNNING, worker="timer@bench")
        store.transition(reservation.job_id, JobStatus.SUCCEEDED)
    return took


def _drain(client: redis.Redis) -> None:
    """Finish what the timing left queued, so the lives measured are only theirs."""
    scheduler, store = Scheduler(client, 600), JobStore(client, 3600)
    while (reservation := scheduler.reserve("drain@bench", QUEUES)) is not None:
        store.transition(reservation.job_id, JobStatus.RUNNING, worker="drain@bench")
        store.transition(reservation.job_id, JobStatus.SUCCEEDED)


def _run_lives(client: redis.Redis, api_url: str, tokens: list[str], ids: list[str]) -> None:
    """WORKERS simulated workers run every job; each job is polled three times."""
    lives = _Lives(client, len(ids))
    threads = [
        threading.Thread(target=lives.work, args=(f"sim-{i}@bench",), daemon=True)
        for i in range(WORKERS)
    ]
    for thread in threads:
        thread.start()

    def poll(pair: tuple[int, str]) -> None:
        index, job_id = pair
        headers = {"Authorization": f"Bearer {tokens[index % len(tokens)]}"}
        with httpx.Client(base_url=api_url, timeout=60, headers=headers) as http:
            for _ in range(3):
                http.get(f"/jobs/{job_id}")
                time.sleep(ENGINE_S)

    with concurrent.futures.ThreadPoolExecutor(16) as pollers:
        list(pollers.map(poll, enumerate(ids)))
    if not lives.done.wait(600):
        raise BenchError("the simulated workers did not finish every job in 600 s")
    for thread in threads:
        thread.join(timeout=10)


class _Lives:
    """Simulated workers: the Redis calls of a worker's job, an engine that sleeps."""

    def __init__(self, client: redis.Redis, total: int):
        self.client = client
        self.total = total
        self.finished = itertools.count(1)
        self.done = threading.Event()

    def work(self, name: str) -> None:
        scheduler, store = Scheduler(self.client, 600), JobStore(self.client, 3600)
        hand: str | None = None
        while not self.done.is_set():
            reservation = scheduler.reserve(name, QUEUES, hand)
            hand = None
            if reservation is None:
                # Idle, as a worker is: it waits for a wake-up token (kombu's BRPOP).
                token = self.client.brpop(QUEUES, timeout=0.2)
                hand = reply_text(token[0]) if token else None
                continue
            running = store.transition(reservation.job_id, JobStatus.RUNNING, worker=name)
            for progress in (0.33, 0.66):
                store.report_progress(running, progress)
            time.sleep(ENGINE_S)
            store.transition(reservation.job_id, JobStatus.SUCCEEDED, progress=1.0)
            if next(self.finished) >= self.total:
                self.done.set()


def _redis_counters(client: redis.Redis) -> tuple[float, int]:
    """Redis's CPU seconds so far, and the commands it ran."""
    cpu: dict[str, Any] = client.info("cpu")
    stats: dict[str, Any] = client.info("commandstats")
    calls = sum(int(v["calls"]) for v in stats.values())
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls
