"""Cancel requests for running jobs: a flag in Redis the worker checks after each step."""

from __future__ import annotations

import redis

from shared.constants import CANCEL_KEY_PREFIX


def request_cancel(client: redis.Redis, job_id: str, ttl_s: int) -> None:
    client.set(CANCEL_KEY_PREFIX + job_id, b"1", ex=ttl_s)


def cancel_requested(client: redis.Redis, job_id: str) -> bool:
    return bool(client.exists(CANCEL_KEY_PREFIX + job_id))


def cancels_requested(client: redis.Redis, job_ids: list[str]) -> set[str]:
    """Which of `job_ids` a client asked to stop (one pipelined round trip)."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.exists(CANCEL_KEY_PREFIX + job_id)
    return {job_id for job_id, found in zip(job_ids, pipe.execute(), strict=True) if found}
