"""Redis connections, made on demand (never at import time): redis-py's synchronous
client for code on threads, and the API's one async client, MultiplexedRedis.

Straight to REDIS_URL, or, with REDIS_SENTINELS, to whichever server the
sentinels name master: asked again on every new connection, so after a
failover each part reconnects to the new master by itself. A connection to a
master that was demoted (a forced failover) answers writes with READONLY;
redis-py's Sentinel connections then drop and reconnect, and so does
MultiplexedRedis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.connection import parse_url
from redis.sentinel import MasterNotFoundError, Sentinel

from shared.multiplexed import MultiplexedRedis
from shared.redis_replies import reply_text
from shared.replica_acks import AsyncMasterCheck, MasterAddress, MasterCheck
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
    """The synchronous client (worker processes, and the API's code on threads)."""
    if settings.redis_sentinels:
        # Untyped in redis-py.
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings)
        )
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
            settings.redis_sentinel_master, **_OPTIONS, **master_options(settings)
        )
        return client
    return redis.Redis.from_url(settings.redis_url, **_OPTIONS)


def multiplexed_client(settings: Settings, extra_timeout_s: float = 0.0) -> MultiplexedRedis:
    """The API's async client: one shared, self-pipelining connection.

    `extra_timeout_s`: what a command may block beyond the usual (a WAIT's own timeout).
    """
    timeout_s = _OPTIONS["socket_timeout"] + extra_timeout_s
    connect_timeout_s = _OPTIONS["socket_connect_timeout"]
    if not settings.redis_sentinels:
        return MultiplexedRedis(settings.redis_url, connect_timeout_s, timeout_s)
    return MultiplexedRedis(
        settings.redis_url, connect_timeout_s, timeout_s, async_named_master(settings)
    )


# Where the sentinels say the master is. Asked with GET-MASTER-ADDR-BY-NAME, which
# names the promoted replica as soon as a failover promoted it, while SENTINEL
# MASTERS (redis-py's discover_master) names the old master until the failover
# ends: a new connection goes to the new master at once.
def async_named_master(settings: Settings) -> Callable[[], Awaitable[MasterAddress]] | None:
    """The sentinels' current master, for MultiplexedRedis (None without Sentinel);
    MasterNotFoundError when none answers or none knows one."""
    if not settings.redis_sentinels:
        return None
    sentinels = _async_sentinel_clients(settings)
    name = settings.redis_sentinel_master

    async def ask() -> MasterAddress:
        for sentinel in sentinels:
            try:
                address = await sentinel.sentinel_get_master_addr_by_name(
                    name, return_responses=True
                )
            except (redis.ConnectionError, redis.TimeoutError):
                continue  # the next sentinel
            if isinstance(address, tuple):
                return _address(address)
        raise MasterNotFoundError(f"no sentinel names a master {name!r}")

    return ask


# Whether a write the master at `server` took and replicas confirmed will
# survive: None if so, else why not. While a failover is under way the old
# master still takes writes and a replica not yet moved still confirms them;
# both drop them once moved. The sentinel leading the failover flags it from
# its start, and every sentinel names the new master once it ends, so a write
# counts only if a majority of the sentinels answer, none has a failover in
# progress and all name `server`.
def master_check(settings: Settings) -> MasterCheck | None:
    """The check for synchronous callers (None without Sentinel)."""
    if not settings.redis_sentinels:
        return None
    sentinels = [
        redis.Redis(host=host, port=port, **_sentinel_options(settings))
        for host, port in settings.sentinel_addresses
    ]
    name = settings.redis_sentinel_master

    def check(server: MasterAddress) -> str | None:
        states = []
        for sentinel in sentinels:
            try:
                state = sentinel.sentinel_master(name, return_responses=True)
                if isinstance(state, dict):
                    states.append(state)
            except (redis.ConnectionError, redis.TimeoutError):
                continue
        return _verdict(states, len(sentinels), server)

    return check


def async_master_check(settings: Settings) -> AsyncMasterCheck | None:
    """master_check for the event loop: the sentinels asked at once."""
    if not settings.redis_sentinels:
        return None
    sentinels = _async_sentinel_clients(settings)
    name = settings.redis_sentinel_master

    async def check(server: MasterAddress) -> str | None:
        answers = await asyncio.gather(
            *(sentinel.sentinel_master(name, return_responses=True) for sentinel in sentinels),
            return_exceptions=True,
        )
        states = [a for a in answers if isinstance(a, dict)]
        return _verdict(states, len(sentinels), server)

    return check


def _verdict(states: list[dict[str, Any]], sentinels: int, server: MasterAddress) -> str | None:
    if len(states) <= sentinels // 2:
        return f"only {len(states)} of {sentinels} sentinels answered"
    for state in states:
        if "failover_in_progress" in reply_text(state.get("flags", "")):
            return "a Sentinel failover is under way"
        named = (reply_text(state.get("ip", "")), int(state.get("port", 0)))
        if named != server:
            return f"the sentinels name {named[0]}:{named[1]} master, not {server[0]}:{server[1]}"
    return None


def master_options(settings: Settings) -> dict[str, Any]:
    """REDIS_URL's database, credentials and TLS options: what a connection to
    whichever server is master takes from it under Sentinel (not its host)."""
    parsed = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    options = {
        name: value
        for name, value in parsed.items()
        if name in {"db", "username", "password"} or name.startswith("ssl_")
    }
    if settings.redis_url.startswith("rediss://"):
        options["ssl"] = True
    return options


def _address(answer: tuple[Any, Any]) -> MasterAddress:
    return reply_text(answer[0]), int(answer[1])


def _async_sentinel_clients(settings: Settings) -> list[AsyncRedis]:
    return [
        AsyncRedis(host=host, port=port, **_sentinel_options(settings))
        for host, port in settings.sentinel_addresses
    ]


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    # A sentinel that does not answer is skipped for the next; no retries on one.
    options: dict[str, Any] = {"socket_connect_timeout": 1, "socket_timeout": 1}
    if settings.redis_sentinel_password is not None:
        options["password"] = settings.redis_sentinel_password.get_secret_value()
    return options
