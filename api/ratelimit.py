"""Per-key rate limits, counted in Redis so that every API process shares them.

Two limits per caller (an API key, or "anonymous" when keys are off); 0 turns one off:

- RATE_LIMIT_SUBMITS_PER_MINUTE: jobs accepted in any sliding 60 s. A sorted
  set per caller logs the time of each accepted job (Redis's clock, so API
  hosts with skewed clocks agree); entries older than a minute are dropped.
- RATE_LIMIT_MAX_QUEUED: jobs queued or running at once. A sorted set per
  caller holds the ids of its jobs; when it looks full, the entries whose
  records finished or expired are pruned (one pipelined read) and it is
  checked again. The workers never touch it.

One Lua script checks both limits and records the job, so concurrent requests
cannot both take the last slot; the API runs it in the script that also stores
and enqueues the job (api.enqueue), so a job is counted exactly when it is
queued. Only new jobs are counted: an idempotent replay never is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import redis

from shared import lua
from shared.constants import ACTIVE_KEY_PREFIX, SUBMITS_KEY_PREFIX
from shared.errors import RateLimited
from shared.jobs import JobStatus
from shared.keypolicy import DEFAULT_POLICY, KeyPolicy
from shared.multiplexed import MultiplexedRedis
from shared.settings import Settings
from shared.store import job_key

WINDOW_MS = 60_000
# When a job will finish is unknown: the client is told to look again after this.
ACTIVE_RETRY_AFTER_S = 5
# A missing record means "expired" only for jobs admitted longer ago than this:
# `admit` alone counts a job before anything stores it (JOB_TTL_S is longer).
RECORD_GRACE_MS = 60_000

ADMITTED, TOO_FAST, TOO_MANY_ACTIVE = 0, 1, 2

# shared/lua/lib/rate_limits.lua checks and counts both limits; the submission script
# (api.enqueue) runs it with storing and enqueueing the job in one atomic step,
# admit.lua runs it alone.
_ADMIT = lua.script("admit")
_USAGE = lua.script("usage")


def submits_key(owner: str) -> str:
    return SUBMITS_KEY_PREFIX + owner


def active_key(owner: str) -> str:
    return ACTIVE_KEY_PREFIX + owner


@dataclass(frozen=True)
class Limits:
    """One key's limits (0: off)."""

    submits_per_minute: int
    max_queued: int

    @classmethod
    def of(cls, settings: Settings, policy: KeyPolicy = DEFAULT_POLICY) -> Limits:
        """The server-wide limits, with the key's own `max_queued` where it has one."""
        max_queued = settings.rate_limit_max_queued
        return cls(
            settings.rate_limit_submits_per_minute,
            max_queued if policy.max_queued is None else policy.max_queued,
        )


def rate_names(
    limits: Limits, settings: Settings, owner: str, job_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """KEYS and ARGV by name of rate_limits.lua for `owner`'s new job `job_id`."""
    keys = {"submits": submits_key(owner), "active": active_key(owner)}
    args = {
        "job": job_id,
        "per_minute": limits.submits_per_minute,
        "max_active": limits.max_queued,
        "window_ms": WINDOW_MS,
        "active_ttl": settings.job_ttl_s,
    }
    return keys, args


def admit(
    client: redis.Redis, settings: Settings, owner: str, job_id: str, limits: Limits | None = None
) -> None:
    """Count the new job `job_id` against `owner`'s limits, or raise RateLimited.

    A refused job counts against nothing.
    """
    limits = limits or Limits.of(settings)
    if not limits.submits_per_minute and not limits.max_queued:
        return
    call = _ADMIT.call(*rate_names(limits, settings, owner, job_id))
    verdict, wait_ms = call.run(client)
    if verdict == TOO_MANY_ACTIVE and prune_finished(client, owner):
        verdict, wait_ms = call.run(client)
    check(int(verdict), int(wait_ms), limits)


def check(verdict: int, wait_ms: int, limits: Limits) -> None:
    """Raise RateLimited for a refusing verdict of rate_check."""
    if verdict == TOO_FAST:
        per_minute = limits.submits_per_minute
        retry_after = max(1, math.ceil(wait_ms / 1000))
        raise RateLimited(
            f"rate limit exceeded: at most {per_minute} jobs per minute per API key "
            f"(RATE_LIMIT_SUBMITS_PER_MINUTE); retry in {retry_after} s",
            "RATE_LIMIT_SUBMITS_PER_MINUTE",
            per_minute,
            retry_after,
        )
    if verdict == TOO_MANY_ACTIVE:
        max_active = limits.max_queued
        raise RateLimited(
            f"rate limit exceeded: at most {max_active} jobs queued or running at once per "
            "API key (RATE_LIMIT_MAX_QUEUED); retry when one of yours has finished",
            "RATE_LIMIT_MAX_QUEUED",
            max_active,
            ACTIVE_RETRY_AFTER_S,
        )


def prune_finished(client: redis.Redis, owner: str) -> int:
    """Drop from `owner`'s active set the jobs that finished or expired; how many went."""
    key = active_key(owner)
    entries: list[tuple[bytes, float]] = client.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
    if not entries:
        return 0
    pipe = client.pipeline(transaction=False)
    pipe.time()
    for job_id, _ in entries:
        pipe.hget(job_key(job_id.decode()), "status")
    (seconds, micros), *statuses = pipe.execute()
    expired_before = seconds * 1000 + micros // 1000 - RECORD_GRACE_MS
    done = [
        job_id
        for (job_id, admitted_ms), raw in zip(entries, statuses, strict=True)
        if _finished(raw, admitted_ms < expired_before)
    ]
    if done:
        client.zrem(key, *done)
    return len(done)


def _finished(raw_status: bytes | None, old_enough_to_expire: bool) -> bool:
    if raw_status is None:  # expired, or not written yet
        return old_enough_to_expire
    return JobStatus(json.loads(raw_status)).is_terminal()  # fields are JSON-encoded


@dataclass(frozen=True)
class Usage:
    """A key's jobs now; None where its limit is off (nothing counts what nothing limits)."""

    submits_last_minute: int | None
    queued: int | None
    running: int | None


async def usage(client: MultiplexedRedis, owner: str, limits: Limits) -> Usage:
    """What `owner` has in flight (shared/lua/usage.lua), for GET /me."""
    call = _USAGE.call(
        {"submits": submits_key(owner), "active": active_key(owner)}, {"window_ms": WINDOW_MS}
    )
    submits, queued, running = await client.run_script(call.lua, call.keys, call.args)
    active = limits.max_queued > 0
    return Usage(
        submits_last_minute=int(submits) if limits.submits_per_minute > 0 else None,
        queued=int(queued) if active else None,
        running=int(running) if active else None,
    )
