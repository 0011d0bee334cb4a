"""Idempotency-Key on POST /jobs: one key, one job, for 24 hours."""

from __future__ import annotations

import hashlib
import json

import redis

from shared.constants import IDEMPOTENCY_KEY_PREFIX, IDEMPOTENCY_TTL_S
from shared.errors import IdempotencyConflict
from shared.jobs import JobCreate


def fingerprint(body: JobCreate) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def _key(owner: str, key: str) -> str:
    return f"{IDEMPOTENCY_KEY_PREFIX}{owner}:{hashlib.sha256(key.encode()).hexdigest()}"


def reserve(client: redis.Redis, owner: str, key: str, body: JobCreate, job_id: str) -> str | None:
    """Claim `key` for `job_id`. Returns None if claimed, or the id of the job it already made.

    Raises IdempotencyConflict when the key was used with a different body.
    """
    body_print = fingerprint(body)
    redis_key = _key(owner, key)
    entry = json.dumps({"fingerprint": body_print, "job_id": job_id})
    while True:
        if client.set(redis_key, entry, nx=True, ex=IDEMPOTENCY_TTL_S):
            return None
        existing = client.get(redis_key)
        if existing is not None:
            break
        # It expired between the two calls: claim it again.
    stored = json.loads(existing)
    if stored["fingerprint"] != body_print:
        raise IdempotencyConflict("Idempotency-Key was already used with a different request body")
    return str(stored["job_id"])


def release(client: redis.Redis, owner: str, key: str) -> None:
    """Forget a key whose job could not be queued, so a retry can succeed."""
    client.delete(_key(owner, key))
