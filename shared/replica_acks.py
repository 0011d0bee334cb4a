"""Writes confirmed on replicas (REDIS_MIN_REPLICAS_ACK) before darkroom relies on them.

Redis replicates asynchronously: a master that dies just after answering a
write can take it along, and Sentinel then promotes a replica that never saw
it. WAIT blocks until that many replicas hold the connection's writes. It
counts only writes sent on the same connection, so a caller that wrote on a
pooled connection writes a mark on the WAIT's own connection first: replicas
apply the master's writes in order, and one that holds the mark holds every
write the master made before it.

Under Sentinel a confirmation alone is not enough: while a failover is under
way, the old master still takes writes and a replica not yet moved to the new
master still confirms them, and both then drop them. So a confirmed write
counts only if the server that took it is the one the sentinels name master.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis

from shared.constants import REPLICATION_MARK_KEY
from shared.errors import NotReplicated
from shared.settings import Settings

MasterAddress = tuple[str, int]
# Whether a write the master at an address took will survive under Sentinel:
# None if so, else why not (shared.connections.master_check and its asyncio twin).
MasterCheck = Callable[[MasterAddress], str | None]
AsyncMasterCheck = Callable[[MasterAddress], Awaitable[str | None]]


@dataclass(frozen=True)
class ReplicaAck:
    replicas: int
    timeout_s: float
    # Under Sentinel: whether a write the master at an address took will survive.
    master_check: MasterCheck | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, master_check: MasterCheck | None = None
    ) -> ReplicaAck | None:
        """The policy REDIS_MIN_REPLICAS_ACK asks for; None when it is 0 (off)."""
        if settings.redis_min_replicas_ack == 0:
            return None
        return cls(settings.redis_min_replicas_ack, settings.redis_ack_timeout_s, master_check)

    @property
    def timeout_ms(self) -> int:
        return max(1, round(self.timeout_s * 1000))

    def confirm(self, client: redis.Redis, what: str) -> None:
        """Return once every write the master made so far is on enough replicas.

        Raises NotReplicated (naming `what`) when fewer confirm in time.
        """
        pool = client.connection_pool
        connection = pool.get_connection()  # one connection for the mark and the WAIT
        try:
            _call(connection, "INCR", REPLICATION_MARK_KEY)
            acknowledged = int(_call(connection, "WAIT", self.replicas, self.timeout_ms))
            server = (str(connection.host), int(connection.port))
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]  # replies may be left unread
            raise
        finally:
            pool.release(connection)
        self.check(int(acknowledged), what, server)

    def check(self, acknowledged: int, what: str, server: MasterAddress | None = None) -> None:
        """NotReplicated unless `acknowledged` is enough and, under Sentinel, the
        sentinels stand behind `server` (the master that took the write)."""
        if acknowledged < self.replicas:
            raise NotReplicated(
                f"{what}: {acknowledged} of the {self.replicas} Redis replicas required "
                f"(REDIS_MIN_REPLICAS_ACK) confirmed it within {self.timeout_s:g} s"
            )
        if self.master_check is not None and server is not None:
            self.refuse_if(self.master_check(server), what)

    @staticmethod
    def refuse_if(reason: str | None, what: str) -> None:
        """NotReplicated for `what` when a master check found `reason`."""
        if reason is not None:
            raise NotReplicated(f"{what}: {reason}; it might not survive it")


def _call(connection: Any, *args: Any) -> Any:
    connection.send_command(*args)
    return connection.read_response()
