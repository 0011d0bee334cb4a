"""A worker's Redis writes that must land, retried through a failover or a restart.

While Sentinel promotes a replica (seconds), or a plain Redis restarts, every
command fails. A job's claim and its terminal status must not be dropped then:
a success never written leaves the job `running` under a worker that is alive,
so no reaper would ever hand it back. These writes are retried until Redis is
back (up to RECOVERY_WINDOW_S); each retry first looks whether the previous
attempt was written after all (its reply lost with the connection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from shared.errors import InvalidTransition, NotReplicated
from shared.jobs import JobRecord, JobStatus
from shared.store import JobStore

log = logging.getLogger(__name__)

T = TypeVar("T")

# Longer than a Sentinel failover (down-after-milliseconds + election: 5-30 s)
# and a Redis restart with its data loaded.
RECOVERY_WINDOW_S = 120.0
# A demoted master answers READONLY; redis-py's Sentinel connections turn it into
# ConnectionError, a plain one does not.
RETRYABLE = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, NotReplicated)


def retrying(action: Callable[[], T], what: str, window_s: float = RECOVERY_WINDOW_S) -> T:
    """`action()`, again after each Redis failure until it succeeds or `window_s` passed."""
    deadline = time.monotonic() + window_s
    delay = 0.1
    while True:
        try:
            return action()
        except RETRYABLE as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: %s: %s; retrying in %.1f s", what, type(exc).__name__, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def transition(
    store: JobStore,
    job_id: str,
    target: JobStatus,
    window_s: float = RECOVERY_WINDOW_S,
    **fields: Any,
) -> JobRecord:
    """store.transition, retried through Redis failures like `retrying`.

    Raises InvalidTransition and JobNotFound as store.transition does, except
    when a retry finds the job already moved there by an attempt whose answer
    was lost: then that record (confirmed on the replicas, its event told).
    """
    attempts = 0

    def attempt() -> JobRecord:
        nonlocal attempts
        attempts += 1
        try:
            return store.transition(job_id, target, **fields)
        except InvalidTransition:
            current = store.get_or_none(job_id) if attempts > 1 else None
            if current is None or not _made_by_us(current, target, fields):
                raise
            store.confirm_replicated(f"job {job_id} became {target}")
            store.announce(current)
            return current

    return retrying(attempt, f"recording job {job_id} as {target}", window_s)


def _made_by_us(current: JobRecord, target: JobStatus, fields: dict[str, Any]) -> bool:
    if current.status is not target:
        return False
    # A running job may be another worker's claim; a terminal status can only be ours
    # (a job is claimed by one worker at a time).
    return target is not JobStatus.RUNNING or current.worker == fields.get("worker")
