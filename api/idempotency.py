"""Idempotency-Key on POST /jobs: one key, one job, for 24 hours.

The key is claimed in the submission script (api.enqueue), in the same atomic
step that stores and enqueues the job: a retry finds either nothing (and makes
the job) or the key with a job that exists.
"""

from __future__ import annotations

import hashlib
import json

from shared.constants import IDEMPOTENCY_KEY_PREFIX
from shared.errors import IdempotencyConflict
from shared.jobs import JobCreate


def fingerprint(body: JobCreate) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


def redis_key(owner: str, key: str) -> str:
    return f"{IDEMPOTENCY_KEY_PREFIX}{owner}:{hashlib.sha256(key.encode()).hexdigest()}"


def entry(body: JobCreate, job_id: str) -> str:
    """What the key holds: the job it made and a hash of the request."""
    return json.dumps({"fingerprint": fingerprint(body), "job_id": job_id})


def earlier_job(stored: bytes, body: JobCreate) -> str:
    """The id of the job an earlier request with the key made.

    Raises IdempotencyConflict when that request had a different body.
    """
    earlier = json.loads(stored)
    if earlier["fingerprint"] != fingerprint(body):
        raise IdempotencyConflict("Idempotency-Key was already used with a different request body")
    return str(earlier["job_id"])
