"""At most WEBHOOK_MAX_PER_KEY deliveries of one API key at once, across every webhook worker.

A running delivery holds a lease: a member of its key's sorted set, scored by
when the lease expires. The delivery gives it back when its attempt is over;
one whose thread died never does, so a lease also expires on its own a little
after the attempt's deadline (WEBHOOK_TIMEOUT_S bounds every attempt), and the
next acquire drops it. Redis's clock decides expiry, so workers whose clocks
disagree still agree on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from shared.constants import WEBHOOK_LEASES_KEY_PREFIX

# A lease outlives its attempt's deadline by this much: signing, the Redis
# round trips around the attempt, a thread that was slow to be scheduled.
LEASE_MARGIN_S = 5.0

ACQUIRE_LUA = """
-- Take a lease on one of `limit` slots, dropping expired leases first.
-- KEYS: leases (the key's sorted set: lease id -> expiry, ms)
-- ARGV: lease_id, limit, lifetime_ms
local leases = KEYS[1]
local lease_id, limit, lifetime_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
redis.call('ZREMRANGEBYSCORE', leases, '-inf', now_ms)
if redis.call('ZCARD', leases) >= limit then
  return 0
end
redis.call('ZADD', leases, now_ms + lifetime_ms, lease_id)
-- The newest lease expires last: the set goes when its last lease does.
redis.call('PEXPIRE', leases, lifetime_ms)
return 1
"""


def leases_key(owner: str) -> str:
    return WEBHOOK_LEASES_KEY_PREFIX + owner


class KeyLeases:
    def __init__(self, client: redis.Redis, limit: int, lifetime_s: float):
        """`limit` leases per key (0: no limit, none taken), each expiring after
        `lifetime_s` unless given back sooner."""
        self.redis = client
        self.limit = limit
        self.lifetime_ms = max(1, int(lifetime_s * 1000))
        self._acquire = client.register_script(ACQUIRE_LUA)

    @contextmanager
    def hold(self, owner: str) -> Iterator[bool]:
        """Whether a lease for `owner` was free; held until the block ends."""
        if not self.limit:
            yield True
            return
        key, lease_id = leases_key(owner), uuid.uuid4().hex
        if not self._acquire(keys=[key], args=[lease_id, self.limit, self.lifetime_ms]):
            yield False
            return
        try:
            yield True
        finally:
            self.redis.zrem(key, lease_id)
