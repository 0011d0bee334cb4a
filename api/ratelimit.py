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
cannot both take the last slot. Only new jobs are counted: an idempotent replay
never reaches `admit`, and a job that could not be queued is refunded.
"""

from __future__ import annotations

import json
import math

import redis
from redis.commands.core import Script

from shared.constants import ACTIVE_KEY_PREFIX, SUBMITS_KEY_PREFIX
from shared.errors import RateLimited
from shared.jobs import JobStatus
from shared.settings import Settings
from shared.store import job_key

WINDOW_MS = 60_000
# When a job will finish is unknown: the client is told to look again after this.
ACTIVE_RETRY_AFTER_S = 5
# A job is admitted just before its record is written: a missing record means
# "expired" only for jobs admitted longer ago than this (JOB_TTL_S is longer).
RECORD_GRACE_MS = 60_000

_ADMITTED, _TOO_FAST, _TOO_MANY_ACTIVE = 0, 1, 2

# KEYS: submits log, active set. ARGV: job id, per-minute limit, active limit,
# window (ms), TTL of the active set (s). Returns {verdict, ms until a slot frees}.
_ADMIT = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local per_minute, max_active = tonumber(ARGV[2]), tonumber(ARGV[3])
local window = tonumber(ARGV[4])
if per_minute > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window)
  if redis.call('ZCARD', KEYS[1]) >= per_minute then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, tonumber(oldest[2]) + window - now_ms}
  end
end
if max_active > 0 and redis.call('ZCARD', KEYS[2]) >= max_active then
  return {2, 0}
end
if per_minute > 0 then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], window)
end
if max_active > 0 then
  redis.call('ZADD', KEYS[2], now_ms, ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return {0, 0}
"""
# Hashed once; run with EVALSHA on whichever client calls it.
_ADMIT_SCRIPT = Script(None, _ADMIT.encode())  # type: ignore[arg-type]


def submits_key(owner: str) -> str:
    return SUBMITS_KEY_PREFIX + owner


def active_key(owner: str) -> str:
    return ACTIVE_KEY_PREFIX + owner


def admit(client: redis.Redis, settings: Settings, owner: str, job_id: str) -> None:
    """Count the new job `job_id` against `owner`'s limits, or raise RateLimited.

    A refused job counts against nothing.
    """
    per_minute = settings.rate_limit_submits_per_minute
    max_active = settings.rate_limit_max_queued
    if not per_minute and not max_active:
        return
    verdict, wait_ms = _try_admit(client, settings, owner, job_id)
    if verdict == _TOO_MANY_ACTIVE and prune_finished(client, owner):
        verdict, wait_ms = _try_admit(client, settings, owner, job_id)
    if verdict == _TOO_FAST:
        retry_after = max(1, math.ceil(wait_ms / 1000))
        raise RateLimited(
            f"rate limit exceeded: at most {per_minute} jobs per minute per API key "
            f"(RATE_LIMIT_SUBMITS_PER_MINUTE); retry in {retry_after} s",
            "RATE_LIMIT_SUBMITS_PER_MINUTE",
            per_minute,
            retry_after,
        )
    if verdict == _TOO_MANY_ACTIVE:
        raise RateLimited(
            f"rate limit exceeded: at most {max_active} jobs queued or running at once per "
            "API key (RATE_LIMIT_MAX_QUEUED); retry when one of yours has finished",
            "RATE_LIMIT_MAX_QUEUED",
            max_active,
            ACTIVE_RETRY_AFTER_S,
        )


def _try_admit(client: redis.Redis, settings: Settings, owner: str, job_id: str) -> tuple[int, int]:
    verdict, wait_ms = _ADMIT_SCRIPT(
        client=client,
        keys=[submits_key(owner), active_key(owner)],
        args=[
            job_id,
            settings.rate_limit_submits_per_minute,
            settings.rate_limit_max_queued,
            WINDOW_MS,
            settings.job_ttl_s,
        ],
    )
    return int(verdict), int(wait_ms)


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


def refund(client: redis.Redis, owner: str, job_id: str) -> None:
    """Uncount a job that was admitted but could not be queued."""
    pipe = client.pipeline(transaction=False)
    pipe.zrem(submits_key(owner), job_id)
    pipe.zrem(active_key(owner), job_id)
    pipe.execute()
