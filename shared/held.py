"""Queued jobs a worker holds: their message taken, prepared to run next (worker/ahead.py).

Such a job is still `queued`, so the running index and the reaper's running
sweep do not see it, and its message is in kombu's unacknowledged set, which
Redis gives back only after the visibility timeout (hours). So the worker
records what it holds here, and the reaper gives the job of a holder that died
a new message at once; the orphan sweep leaves the jobs of live holders alone
(their message is not lost, only waiting for the device).
"""

from __future__ import annotations

import logging

import redis
from celery import Celery

from shared.constants import HELD_KEY
from shared.jobs import JobStatus
from shared.queue import publish_job
from shared.store import JobStore
from shared.workers import alive

log = logging.getLogger(__name__)


def hold(client: redis.Redis, job_id: str, worker: str) -> None:
    """Record that `worker` holds queued job `job_id`'s message."""
    client.hset(HELD_KEY, job_id, worker)


def release(client: redis.Redis, job_id: str) -> None:
    """The job runs here now (the running index has it), or its message went back."""
    client.hdel(HELD_KEY, job_id)


def held_jobs(client: redis.Redis) -> dict[str, str]:
    """Held job id -> the worker holding it."""
    raw: dict[bytes, bytes] = client.hgetall(HELD_KEY)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def reap_held(store: JobStore, celery: Celery, held: dict[str, str]) -> list[str]:
    """Publish a new message for each still-queued job in `held` whose holder is dead."""
    if not held:
        return []
    living = alive(store.redis, set(held.values()))
    requeued = []
    for job_id, worker in held.items():
        if worker in living:
            continue
        record = store.get_or_none(job_id)
        if record is not None and record.status is JobStatus.QUEUED:
            log.warning(
                "job %s was held, prepared to run next, by worker %s, which died: "
                "publishing it again",
                job_id,
                worker,
            )
            publish_job(celery, job_id, record.queue, record.priority)
            requeued.append(job_id)
        release(store.redis, job_id)
    return requeued
