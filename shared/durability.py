"""Writes confirmed on replicas (REDIS_MIN_REPLICAS_ACK) before darkroom relies on them.

Redis replicates asynchronously: a master that dies just after answering a
write can take it along, and Sentinel then promotes a replica that never saw
it. WAIT blocks until that many replicas hold the connection's writes. It
counts only writes sent on the same connection, so a caller that wrote on a
pooled connection writes a mark on the WAIT's own connection first: replicas
apply the master's writes in order, and one that holds the mark holds every
write the master made before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from shared.constants import REPLICATION_MARK_KEY
from shared.errors import NotReplicated
from shared.settings import Settings


@dataclass(frozen=True)
class ReplicaAck:
    replicas: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaAck | None:
        """The policy REDIS_MIN_REPLICAS_ACK asks for; None when it is 0 (off)."""
        if settings.redis_min_replicas_ack == 0:
            return None
        return cls(settings.redis_min_replicas_ack, settings.redis_ack_timeout_s)

    @property
    def timeout_ms(self) -> int:
        return max(1, round(self.timeout_s * 1000))

    def confirm(self, client: redis.Redis, what: str) -> None:
        """Return once every write the master made so far is on enough replicas.

        Raises NotReplicated (naming `what`) when fewer confirm in time.
        """
        pipe = client.pipeline(transaction=False)  # one connection for the mark and the WAIT
        pipe.incr(REPLICATION_MARK_KEY)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)  # type: ignore[no-untyped-call]
        _, acknowledged = pipe.execute()
        self.check(int(acknowledged), what)

    def check(self, acknowledged: int, what: str) -> None:
        if acknowledged < self.replicas:
            raise NotReplicated(
                f"{what}: {acknowledged} of the {self.replicas} Redis replicas required "
                f"(REDIS_MIN_REPLICAS_ACK) confirmed it within {self.timeout_s:g} s"
            )
