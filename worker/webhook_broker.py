"""The webhook worker's Redis transport: kombu's, made to ride out a Redis restart.

Why kombu's own exits. When the broker connection drops, Celery's consumer
first `collect()`s the connection, which detaches it from its transport
(`transport.client = None`), and then closes it. The channel's first close
(inside `collect`) failed on the dead socket before it was marked closed, so
this second close runs in full: it drops the channel's connection pool, then
hands the messages it holds unacknowledged back to their queue
(`QoS.restore_unacked`). That needs a Redis client, so kombu builds a new pool
from `transport.client`, which is None: AttributeError, which is none of the
connection errors Celery recovers from, and the worker exits ("Unrecoverable
error"). A GPU worker (solo pool, prefetch 1) has acknowledged its message
before its event loop runs again, so it holds none when it notices the loss;
the webhook worker (threads, prefetch) nearly always holds some.

And Redis is down at that moment anyway: the messages would stay in kombu's
unacknowledged hash until the visibility timeout (2 h) hands them out again.

So here a detached channel raises a connection error instead of building a
pool, a channel that cannot reach Redis when it closes keeps the delivery tags
it held (HANDOVER), and the next channel this process opens, once Redis
answers again, puts those messages back on their queue at once. A message
whose delivery finished in the meantime is dropped instead. Deliveries are
idempotent per webhook-id, so one delivered both by its old thread and again
from the queue is harmless.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual

log = logging.getLogger(__name__)

BROKER_ERRORS: tuple[type[BaseException], ...] = kombu_redis.Transport.connection_errors
# (kombu's transports are untyped: the type: ignore[no-untyped-call] below.)


class Handover:
    """Delivery tags that closed channels could not settle with Redis, for the next
    channel: to restore (still unacknowledged) or to forget (finished since)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._restore: set[str] = set()
        self._forget: set[str] = set()

    def keep(self, tags: set[str]) -> None:
        with self._lock:
            self._restore |= tags
            self._forget -= tags

    def finished(self, tag: str) -> None:
        """An old channel's message was acknowledged: it must not run again."""
        with self._lock:
            if tag in self._restore:
                self._restore.discard(tag)
                self._forget.add(tag)

    def take(self) -> tuple[set[str], set[str]]:
        with self._lock:
            taken = self._restore, self._forget
            self._restore, self._forget = set(), set()
            return taken

    def give_back(self, restore: set[str], forget: set[str]) -> None:
        """What a channel took but could not settle: for the one after it."""
        with self._lock:
            self._restore |= restore - self._forget
            self._forget |= forget


# One per process: the channel that held the messages is gone by the time the
# next one exists.
HANDOVER = Handover()


class HandoverQoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except BROKER_ERRORS as exc:
            tags = set(self._delivered)
            self._delivered.clear()
            HANDOVER.keep(tags)
            log.warning(
                "broker unreachable (%s): %d unacknowledged deliveries go back to the queue "
                "once it answers again",
                exc,
                len(tags),
            )

    def ack(self, delivery_tag: str) -> None:
        if self.channel.closed:
            # Its messages were handed back or handed over when it closed.
            HANDOVER.finished(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            return
        super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self.channel.closed:
            if requeue:
                HANDOVER.keep({delivery_tag})
            else:
                HANDOVER.finished(delivery_tag)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]
            return
        super().reject(delivery_tag, requeue)  # type: ignore[no-untyped-call]


class HandoverChannelMixin:
    """Settles what earlier channels handed over as soon as this one reaches Redis."""

    QoS = HandoverQoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # pings Redis: raises if it does not answer
        self._settle_handover()

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:  # type: ignore[attr-defined]
            # Detached by Celery's collect(): this channel is done; kombu would
            # fail with AttributeError building a pool from nothing.
            raise redis.exceptions.ConnectionError("the broker connection was closed")
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        return params

    def _settle_handover(self) -> None:
        restore, forget = HANDOVER.take()
        if not restore and not forget:
            return
        qos: HandoverQoS = self.qos  # type: ignore[attr-defined]
        client = self.client  # type: ignore[attr-defined]
        try:
            for tag in restore:
                qos.restore_by_tag(tag, client=client)  # type: ignore[no-untyped-call]
            for tag in forget:
                qos._remove_from_indices(tag, client.pipeline()).execute()  # type: ignore[no-untyped-call]
        except BROKER_ERRORS:
            HANDOVER.give_back(restore, forget)
            raise  # no channel without Redis: Celery connects again
        log.info("put %d deliveries held when the broker went away back on the queue", len(restore))


class Channel(HandoverChannelMixin, kombu_redis.Channel):
    pass


class SentinelChannel(HandoverChannelMixin, kombu_redis.SentinelChannel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def transport_path(sentinel: bool) -> str:
    """The `broker_transport` setting of a Celery app that should use these."""
    name = "SentinelTransport" if sentinel else "Transport"
    return f"{__name__}:{name}"
