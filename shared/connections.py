"""Redis connections, made on demand (never at import time)."""

from __future__ import annotations

import redis

from shared.settings import Settings


def redis_client(settings: Settings) -> redis.Redis:
    # Short timeouts: an API request should answer 503 quickly when Redis is
    # down, not hang; the client reconnects by itself when Redis is back.
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
        retry_on_timeout=True,
    )
