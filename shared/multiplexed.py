"""One Redis connection that all of a process's coroutines share, pipelined by itself.

The API's async client: everything it serves on the event loop (polls,
submissions, streams, the other APIs' dialects) talks to Redis through it. We
measured it against redis-py's asyncio client with hiredis on the benchmark's
`api` row (#31): a poll 0.46-0.48 of a trivial app's rate against 0.31-0.34, a
submission 0.20-0.22 against 0.15-0.16. redis-py checks a connection out of its
pool for every command, arms a timeout around every read and parses replies in
Python: about 50 us of CPU per command, as much as the rest of a poll. Redis
answers the commands of one connection in the order it received them, so
concurrent requests can share a connection: each command joins the connection's
write buffer (written once per turn of the event loop, so a burst of requests
costs one system call) and each reply resolves the oldest waiting future. One
timer per connection, not per command, enforces the timeout. Fast clients for
servers do the same (automatic pipelining, multiplexed connections).

Only raw commands (`execute("HGET", key, field)`), Lua scripts (EVALSHA; the
script's text on NOSCRIPT), commands sent back to back on one connection (a
write and the WAIT for its replicas) and RESP2 replies (bytes, ints, lists:
HGETALL's is flat). Concurrent callers' commands interleave on the connection,
so it carries no MULTI/EXEC, no WATCH and no blocking command: what must happen
together is one Lua script. Under Sentinel a `locate` coroutine names the master
for each new connection; a demoted master's READONLY drops the connection, so
the next command finds the new one. Errors are redis-py's exception types, so
the API answers them as it answers redis-py's (503 for ConnectionError and
TimeoutError).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url


@dataclass(frozen=True)
class LuaScript:
    """A script's text and its SHA-1, the name EVALSHA runs it by."""

    source: bytes
    sha: str

    @classmethod
    def of(cls, source: str) -> LuaScript:
        data = source.encode()
        return cls(data, hashlib.sha1(data).hexdigest())


class MultiplexedRedis:
    """Commands over one shared connection, (re)connected on first use."""

    def __init__(
        self,
        url: str,
        connect_timeout_s: float,
        timeout_s: float,
        locate: Callable[[], Awaitable[tuple[str, int]]] | None = None,
    ):
        self.options: dict[str, Any] = dict(parse_url(url))
        self.tls = url.startswith("rediss://")
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        # The (host, port) to connect to, asked anew for each connection (Sentinel);
        # None: the URL's.
        self.locate = locate
        self._connection: _Connection | None = None
        # The attempt in progress: concurrent callers wait for the same one.
        self._opening: asyncio.Task[_Connection] | None = None

    async def execute(self, *args: Any) -> Any:
        """Run one command; its reply (bytes, int, list, None), or redis-py's error."""
        connection = self._connection
        if connection is None or not connection.usable():
            connection = await self._connect()
        return await connection.send(args)

    async def run_script(self, script: LuaScript, keys: list[Any], args: list[Any]) -> Any:
        """EVALSHA, with the script's text once when Redis does not know it (a restart)."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def run_script_then(
        self, script: LuaScript, keys: list[Any], args: list[Any], *command: Any
    ) -> tuple[Any, Any, tuple[str, int] | None]:
        """The script's reply and `command`'s, sent right behind it on the same
        connection (WAIT counts only its own connection's writes), and the
        (host, port) of the server that ran them (None over a Unix socket)."""
        for call in (("EVALSHA", script.sha), ("EVAL", script.source)):
            connection = self._connection
            if connection is None or not connection.usable():
                connection = await self._connect()
            sent = connection.send((*call, len(keys), *keys, *args)), connection.send(command)
            try:
                reply = await sent[0]
            except BaseException as exc:
                _discard(sent[1])
                if isinstance(exc, redis.exceptions.NoScriptError):
                    continue
                raise
            return reply, await sent[1], connection.address
        raise redis.ResponseError("Redis refused the script's text after NOSCRIPT")

    async def aclose(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        if self._connection is not None:
            self._connection.close(redis.ConnectionError("the client was closed"))
            self._connection = None

    async def _connect(self) -> _Connection:
        opening = self._opening
        if opening is None or opening.done() or opening.get_loop() is not _loop():
            opening = self._opening = asyncio.ensure_future(self._open_in_time())
            # Its failure is every waiting caller's; none left must not make it "unretrieved".
            opening.add_done_callback(lambda done: done.cancelled() or done.exception())
        # Shielded: a caller that is cancelled does not cancel the attempt for the others.
        connection = await asyncio.shield(opening)
        self._connection = connection
        return connection

    async def _open_in_time(self) -> _Connection:
        try:
            return await asyncio.wait_for(self._open(), self.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            raise redis.ConnectionError(f"Error connecting to Redis: {exc}") from exc

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        options = self.options
        factory = lambda: _Connection(loop, self.timeout_s)  # noqa: E731
        address: tuple[str, int] | None = None
        if self.locate is not None:
            address = await self.locate()
        elif "path" not in options:
            address = (options.get("host", "localhost"), int(options.get("port", 6379)))
        if address is None:
            _, connection = await loop.create_unix_connection(factory, options["path"])
        else:
            _, connection = await loop.create_connection(
                factory, *address, ssl=_ssl_context(options) if self.tls else None
            )
        connection.address = address
        try:
            if options.get("password"):
                user = [options["username"]] if options.get("username") else []
                await connection.send(("AUTH", *user, options["password"]))
            if options.get("db"):
                await connection.send(("SELECT", options["db"]))
        except BaseException:  # refused, timed out or cancelled: not left open
            connection.close(redis.ConnectionError("could not set the connection up"))
            raise
        return connection


def _discard(future: asyncio.Future[Any]) -> None:
    """Drop a command's reply: not awaited, it is read and thrown away (an error too)."""
    if future.done():
        future.cancelled() or future.exception()
    else:
        future.cancel()


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext:
    # rediss://: verified like redis-py does unless the URL says ssl_cert_reqs=none.
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if str(options.get("ssl_cert_reqs", "required")).lower() == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Connection(asyncio.Protocol):
    """One connection: commands written in batches, replies matched in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float):
        self.loop = loop
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        # Futures of the commands sent and not yet answered, oldest first, with
        # the loop time each was sent.
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.unsent: list[bytes] = []
        self.received = bytearray()
        self.failure: Exception | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        # The server's (host, port); None over a Unix socket.
        self.address: tuple[str, int] | None = None

    def usable(self) -> bool:
        # A connection belongs to the loop it was opened on (tests run several loops).
        return self.failure is None and _loop() is self.loop

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()
        if self.failure is not None:
            future.set_exception(self.failure)
            return future
        if not self.unsent:
            self.loop.call_soon(self._flush)
        self.unsent.append(_pack(args))
        self.waiting.append((future, self.loop.time()))
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(self.timeout_s, self._check_timeout)
        return future

    def close(self, failure: Exception) -> None:
        """Fail every waiting command and drop the connection."""
        if self.failure is None:
            self.failure = failure
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(failure)
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += data
        position = 0
        demoted = False
        try:
            while self.waiting:
                parsed = _parse(self.received, position)
                if parsed is None:
                    break
                reply, position = parsed
                future, _ = self.waiting.popleft()
                if isinstance(reply, redis.ReadOnlyError):
                    # The master we connected to is a replica now (a failover):
                    # answered like a lost connection, and the next command reconnects.
                    demoted = True
                    reply = redis.ConnectionError(f"Redis is a replica now: {reply}")
                if future.done():  # its request was cancelled; the reply is not wanted
                    continue
                if isinstance(reply, redis.RedisError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except ValueError as exc:  # not RESP: nothing further on this connection can be trusted
            self.close(redis.ConnectionError(f"Redis sent what is not RESP: {exc}"))
        del self.received[:position]
        if demoted:
            self.close(redis.ConnectionError("Redis became a replica (a failover)"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(redis.ConnectionError(f"Connection to Redis lost: {exc or 'closed'}"))

    # -- internals -----------------------------------------------------------------

    def _flush(self) -> None:
        if self.unsent and self.transport is not None and self.failure is None:
            self.transport.write(b"".join(self.unsent))
        self.unsent.clear()

    def _check_timeout(self) -> None:
        self.watchdog = None
        if not self.waiting:
            return
        overdue_at = self.waiting[0][1] + self.timeout_s
        if self.loop.time() >= overdue_at:
            # The replies still due would answer the wrong commands: start afresh.
            self.close(redis.TimeoutError(f"Redis did not answer within {self.timeout_s} s"))
        else:
            self.watchdog = self.loop.call_at(overdue_at, self._check_timeout)


def _pack(args: tuple[Any, ...]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(b"\r\n")
    return b"".join(parts)


def _parse(buffer: bytearray, position: int) -> tuple[Any, int] | None:
    """The RESP2 reply at `position` and where the next starts; None if incomplete."""
    end = buffer.find(b"\r\n", position)
    if end < 0:
        return None
    kind, line, position = buffer[position], bytes(buffer[position + 1 : end]), end + 2
    if kind == 36:  # $: bulk string ($-1: nil)
        size = int(line)
        if size < 0:
            return None, position
        if len(buffer) < position + size + 2:
            return None
        return bytes(buffer[position : position + size]), position + size + 2
    if kind == 42:  # *: array (*-1: nil)
        return _parse_items(buffer, position, int(line))
    if kind == 58:  # :
        return int(line), position
    if kind == 43:  # +
        return line, position
    if kind == 45:  # -: an error, raised in the waiting coroutine
        error = BaseParser.parse_error(line.decode(errors="replace"))  # type: ignore[no-untyped-call]
        return error, position
    raise ValueError(f"unknown reply type {chr(kind)!r}")


def _parse_items(buffer: bytearray, position: int, count: int) -> tuple[Any, int] | None:
    if count < 0:
        return None, position
    items: list[Any] = []
    for _ in range(count):
        parsed = _parse(buffer, position)
        if parsed is None:
            return None
        item, position = parsed
        items.append(item)
    return items, position
