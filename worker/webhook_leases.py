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

from shared import lua
from shared.constants import WEBHOOK_LEASES_KEY_PREFIX

# A lease outlives its attempt's deadline by this much: signing, the Redis
# round trips around the attempt, a thread that was slow to be scheduled.
LEASE_MARGIN_S = 5.0

# shared/lua/acquire_lease.lua: a lease taken only while a slot is free.
_ACQUIRE = lua.script("acquire_lease")


def leases_key(owner: str) -> str:
    return WEBHOOK_LEASES_KEY_PREFIX + owner


class KeyLeases:
    def __init__(self, client: redis.Redis, limit: int, lifetime_s: float):
        """`limit` leases per key (0: no limit, none taken), each expiring after
        `lifetime_s` unless given back sooner."""
        self.redis = client
        self.limit = limit
        self.lifetime_ms = max(1, int(lifetime_s * 1000))

    @contextmanager
    def hold(self, owner: str) -> Iterator[bool]:
        """Whether a lease for `owner` was free; held until the block ends."""
        if not self.limit:
            yield True
            return
        key, lease_id = leases_key(owner), uuid.uuid4().hex
        args = {"lease": lease_id, "limit": self.limit, "lifetime_ms": self.lifetime_ms}
        if not _ACQUIRE.call({"leases": key}, args).run(self.redis):
            yield False
            return
        try:
            yield True
        finally:
            self.redis.zrem(key, lease_id)
