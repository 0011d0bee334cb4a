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
from redis.commands.core import Script

from shared.constants import ACTIVE_KEY_PREFIX, JOB_KEY_PREFIX, SUBMITS_KEY_PREFIX
from shared.errors import RateLimited
from shared.jobs import JobStatus
from shared.keypolicy import DEFAULT_POLICY, KeyPolicy
from shared.multiplexed import LuaScript, MultiplexedRedis
from shared.settings import Settings
from shared.store import job_key

WINDOW_MS = 60_000
# When a job will finish is unknown: the client is told to look again after this.
ACTIVE_RETRY_AFTER_S = 5
# A missing record means "expired" only for jobs admitted longer ago than this:
# `admit` alone counts a job before anything stores it (JOB_TTL_S is longer).
RECORD_GRACE_MS = 60_000

ADMITTED, TOO_FAST, TOO_MANY_ACTIVE = 0, 1, 2

# Lua: the limits as two functions of offsets into KEYS and ARGV, so that the
# submission script (api.enqueue) checks them, stores and enqueues the job in one
# atomic step; _ADMIT_SCRIPT below runs them alone.
# KEYS[k+1], KEYS[k+2]: the caller's submits log and active set. ARGV[a+1..a+5]:
# job id, per-minute limit, active limit, window (ms), TTL of the active set (s).
# rate_check returns nil and the time (ms) when admitted, else {verdict, ms until
# a slot frees}; it writes nothing but the trimming of expired entries.
LUA = """
local function rate_check(k, a)
  local per_minute, max_active = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if per_minute == 0 and max_active == 0 then return nil, 0 end
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local window = tonumber(ARGV[a + 4])
  if per_minute > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 1], '-inf', now_ms - window)
    if redis.call('ZCARD', KEYS[k + 1]) >= per_minute then
      local oldest = redis.call('ZRANGE', KEYS[k + 1], 0, 0, 'WITHSCORES')
      return {1, tonumber(oldest[2]) + window - now_ms}, now_ms
    end
  end
  if max_active > 0 and redis.call('ZCARD', KEYS[k + 2]) >= max_active then
    return {2, 0}, now_ms
  end
  return nil, now_ms
end

local function rate_record(k, a, now_ms)
  if tonumber(ARGV[a + 2]) > 0 then
    redis.call('ZADD', KEYS[k + 1], now_ms, ARGV[a + 1])
    redis.call('PEXPIRE', KEYS[k + 1], ARGV[a + 4])
  end
  if tonumber(ARGV[a + 3]) > 0 then
    redis.call('ZADD', KEYS[k + 2], now_ms, ARGV[a + 1])
    redis.call('EXPIRE', KEYS[k + 2], ARGV[a + 5])
  end
end
"""
# Hashed once; run with EVALSHA on whichever client calls it.
_ADMIT_SCRIPT = Script(
    None,  # type: ignore[arg-type]
    (
        LUA
        + """
local refused, now_ms = rate_check(0, 0)
if refused then return refused end
rate_record(0, 0, now_ms)
return {0, 0}
"""
    ).encode(),
)


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


def rate_call(
    limits: Limits, settings: Settings, owner: str, job_id: str
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of LUA's functions for `owner`'s new job `job_id`."""
    keys = [submits_key(owner), active_key(owner)]
    args: list[Any] = [
        job_id,
        limits.submits_per_minute,
        limits.max_queued,
        WINDOW_MS,
        settings.job_ttl_s,
    ]
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
    keys, args = rate_call(limits, settings, owner, job_id)
    verdict, wait_ms = _ADMIT_SCRIPT(keys=keys, args=args, client=client)
    if verdict == TOO_MANY_ACTIVE and prune_finished(client, owner):
        verdict, wait_ms = _ADMIT_SCRIPT(keys=keys, args=args, client=client)
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


# What a key has in flight, for GET /me: jobs accepted in the last minute, and
# its jobs now queued and running (from the active set, read with their statuses).
# KEYS[1], KEYS[2]: the submits log and active set; ARGV[1]: the window (ms),
# ARGV[2]: the job record key prefix.
_USAGE = LuaScript.of(
    """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local submits = redis.call('ZCOUNT', KEYS[1], now_ms - tonumber(ARGV[1]), '+inf')
local queued, running = 0, 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local status = redis.call('HGET', ARGV[2] .. id, 'status')
  if status == '"queued"' then queued = queued + 1
  elseif status == '"running"' then running = running + 1 end
end
return {submits, queued, running}
"""
)


@dataclass(frozen=True)
class Usage:
    """A key's jobs now; None where its limit is off (nothing counts what nothing limits)."""

    submits_last_minute: int | None
    queued: int | None
    running: int | None


async def usage(client: MultiplexedRedis, owner: str, limits: Limits) -> Usage:
    submits, queued, running = await client.run_script(
        _USAGE, [submits_key(owner), active_key(owner)], [WINDOW_MS, JOB_KEY_PREFIX]
    )
    active = limits.max_queued > 0
    return Usage(
        submits_last_minute=int(submits) if limits.submits_per_minute > 0 else None,
        queued=int(queued) if active else None,
        running=int(running) if active else None,
    )
