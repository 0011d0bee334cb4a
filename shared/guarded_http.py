"""Outgoing HTTP to addresses checked at connect time, within one deadline.

Connections go only to addresses checked at connect time (the address actually
dialled, so a DNS answer that changed since a URL was checked cannot point a
request at an internal host). The deadline bounds the whole exchange, not each
socket operation: every resolve, connect, TLS handshake, write and read gets
only the time left, so a server that trickles its answer a byte at a time cannot
hold a thread past it. Webhook deliveries (worker/webhook_http.py) and adapter
downloads (api/lora_fetch.py) go through it.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import httpcore

from shared.webhooks import resolve_allowed


class DeadlinePassed(httpcore.TimeoutException):
    """The attempt's deadline passed before it was done."""


class Deadline:
    """A point in time (monotonic) that every step of one attempt must finish by."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left, or DeadlinePassed when none are."""
        left = self._at - time.monotonic()
        if left <= 0:
            raise DeadlinePassed(f"deadline of {self.seconds:g} s passed")
        return left


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every operation may take only what is left of the deadline
    (httpcore would give each read the whole timeout afresh)."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline):
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.remaining())

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # The body (one job as JSON) fits in the socket's send buffer: one send.
        self._stream.write(buffer, self._deadline.remaining())

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The handshake, too, is one socket operation with a total timeout (ssl's).
        tls = self._stream.start_tls(ssl_context, server_hostname, self._deadline.remaining())
        return DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class GuardedBackend(httpcore.SyncBackend):
    """Resolves and checks the host itself, then dials the checked address, all
    within the attempt's deadline."""

    def __init__(self, allow_private: bool, deadline: Deadline):
        self.allow_private = allow_private
        self.deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        address = resolve_before(host, port, self.allow_private, self.deadline)[0]
        # TLS still verifies and sends SNI for the URL's host name.
        stream = super().connect_tcp(
            address, port, self.deadline.remaining(), local_address, socket_options
        )
        return DeadlineStream(stream, self.deadline)


def resolve_before(host: str, port: int, allow_private: bool, deadline: Deadline) -> list[str]:
    """resolve_allowed, given up on at the deadline.

    getaddrinfo cannot be interrupted and a slow name server can hold it for
    tens of seconds, so it runs on a thread of its own that is left to finish
    alone; the delivery thread moves on.
    """
    answer: Future[list[str]] = Future()

    def resolve() -> None:
        try:
            answer.set_result(resolve_allowed(host, port, allow_private))
        except Exception as exc:  # noqa: BLE001 -- re-raised by the waiting thread
            answer.set_exception(exc)

    threading.Thread(target=resolve, name=f"resolve {host}", daemon=True).start()
    try:
        return answer.result(timeout=deadline.remaining())
    except FutureTimeout:
        raise DeadlinePassed(
            f"deadline of {deadline.seconds:g} s passed resolving {host}"
        ) from None
