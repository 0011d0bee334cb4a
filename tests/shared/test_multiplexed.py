"""The shared, self-pipelining Redis connection of the API's hot paths, on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from darkroom.stack import free_port, redis_server_binary
from shared.multiplexed import LuaScript, MultiplexedRedis
from tests.support.processes import start_redis_server

DB = 12  # a database of the test Redis no other test uses
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture
def url(redis_base_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(f"{redis_base_url}/{DB}")
    client.flushdb()
    yield f"{redis_base_url}/{DB}"
    client.flushdb()


def connect(url: str, timeout_s: float = 5) -> MultiplexedRedis:
    return MultiplexedRedis(url, connect_timeout_s=2, timeout_s=timeout_s)


def test_commands_and_their_replies(url: str) -> None:
    async def main() -> list[Any]:
        mux = connect(url)
        try:
            return [
                await mux.execute("SET", "k", "v"),
                await mux.execute("GET", "k"),
                await mux.execute("GET", "missing"),
                await mux.execute("INCRBY", "n", 41),
                await mux.execute("RPUSH", "l", "a", b"\x00\xff"),
                await mux.execute("LRANGE", "l", 0, -1),
                await mux.execute("EVAL", "return {1, {'x', false}, 'y'}", 0),
            ]
        finally:
            await mux.aclose()

    assert run(main()) == [b"OK", b"v", None, 41, 2, [b"a", b"\x00\xff"], [1, [b"x", None], b"y"]]
    # The database in the URL is the one written.
    assert redis.Redis.from_url(url).get("k") == b"v"


def test_an_error_reply_is_redis_pys_error_and_the_connection_goes_on(url: str) -> None:
    async def main() -> Any:
        mux = connect(url)
        try:
            await mux.execute("SET", "k", "v")
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                await mux.execute("LPUSH", "k", "x")
            return await mux.execute("GET", "k")
        finally:
            await mux.aclose()

    assert run(main()) == b"v"


def test_concurrent_commands_each_get_their_own_reply(url: str) -> None:
    async def main() -> list[Any]:
        mux = connect(url)
        try:
            keys = [f"k{i}" for i in range(300)]
            await asyncio.gather(*(mux.execute("SET", key, key) for key in keys))
            return await asyncio.gather(*(mux.execute("GET", key) for key in keys))
        finally:
            await mux.aclose()

    assert run(main()) == [f"k{i}".encode() for i in range(300)]


def test_large_values_arrive_whole(url: str) -> None:
    value = bytes(range(256)) * 8192  # 2 MiB: many reads of the socket

    async def main() -> Any:
        mux = connect(url)
        try:
            await mux.execute("SET", "big", value)
            return await mux.execute("GET", "big")
        finally:
            await mux.aclose()

    assert run(main()) == value


def test_a_script_redis_forgot_is_sent_again(url: str) -> None:
    script = LuaScript.of("return redis.call('INCR', KEYS[1]) + tonumber(ARGV[1])")

    async def main() -> list[Any]:
        mux = connect(url)
        try:
            first = await mux.run_script(script, ["n"], [10])
            await mux.execute("SCRIPT", "FLUSH")  # as after a restart
            return [first, await mux.run_script(script, ["n"], [10])]
        finally:
            await mux.aclose()

    assert run(main()) == [11, 12]


def test_an_unreachable_redis_is_a_connection_error() -> None:
    async def main() -> None:
        mux = connect(f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(redis.ConnectionError):
            await mux.execute("PING")

    run(main())


def test_a_late_reply_is_a_timeout_and_the_next_command_reconnects(url: str) -> None:
    async def main() -> Any:
        mux = connect(url, timeout_s=0.3)
        try:
            with pytest.raises(redis.TimeoutError):
                await mux.execute("BLPOP", "empty", 2)  # answers only after 2 s
            return await mux.execute("PING")
        finally:
            await mux.aclose()

    assert run(main()) == b"PONG"


def test_a_cancelled_command_does_not_take_the_next_ones_reply(url: str) -> None:
    async def main() -> Any:
        mux = connect(url)
        try:
            slow = asyncio.ensure_future(mux.execute("BLPOP", "empty", 0.3))
            await asyncio.sleep(0.05)
            slow.cancel()  # its reply still comes, first, and is dropped
            return await mux.execute("ECHO", "mine")
        finally:
            await mux.aclose()

    assert run(main()) == b"mine"


def test_closing_fails_what_is_waiting(url: str) -> None:
    async def main() -> None:
        mux = connect(url)
        waiting = asyncio.ensure_future(mux.execute("BLPOP", "empty", 1))
        await asyncio.sleep(0.05)
        await mux.aclose()
        with pytest.raises(redis.ConnectionError):
            await waiting

    run(main())


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own that wants a password."""
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary to start")
    port = free_port()
    command = [binary, "--port", str(port), "--save", "", "--appendonly", "no"]
    server = start_redis_server(
        [*command, "--requirepass", "secret", "--dir", str(tmp_path)],
        tmp_path / "redis.log",
        redis.Redis(port=port, password="secret"),
    )
    try:
        yield port
    finally:
        server.stop(timeout_s=10)


def test_the_password_and_database_in_the_url_are_used(guarded_redis: int) -> None:
    async def main() -> Any:
        mux = connect(f"redis://:secret@127.0.0.1:{guarded_redis}/3")
        try:
            return await mux.execute("SET", "k", "v")
        finally:
            await mux.aclose()

    assert run(main()) == b"OK"
    assert redis.Redis(port=guarded_redis, password="secret", db=3).get("k") == b"v"


def test_a_wrong_password_is_a_connection_error(guarded_redis: int) -> None:
    async def main() -> None:
        mux = connect(f"redis://:wrong@127.0.0.1:{guarded_redis}/0")
        with pytest.raises(redis.ConnectionError):
            await mux.execute("PING")

    run(main())
