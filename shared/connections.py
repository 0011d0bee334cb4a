"""Redis connections, made on demand (never at import time)."""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from shared.multiplexed import MultiplexedRedis
from shared.settings import Settings

# Short timeouts: an API request should answer 503 quickly when Redis is down,
# not hang; the client reconnects by itself when Redis is back.
_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "health_check_interval": 30,
    "retry_on_timeout": True,
}


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, **_OPTIONS)


def async_redis_client(settings: Settings) -> AsyncRedis:
    """For the API's reads served on the event loop without a thread hop (the
    hottest two, polls and submissions, go through multiplexed_client)."""
    return AsyncRedis.from_url(settings.redis_url, **_OPTIONS)


def multiplexed_client(settings: Settings) -> MultiplexedRedis:
    """One shared, self-pipelining connection for the API's polls and submissions."""
    return MultiplexedRedis(
        settings.redis_url, _OPTIONS["socket_connect_timeout"], _OPTIONS["socket_timeout"]
    )
