"""The chaos row's event log: what was done to the stack, and when."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass
class Event:
    at: float  # time.time() when it began
    kind: str  # worker-kill, worker-exited, api-sigterm, api-sigkill, failover-forced, ...
    label: str  # kind#n, e.g. failover-kill#2
    detail: str = ""
    # How long it took: an API restart, until /readyz answers again; a failover,
    # until every sentinel names the new master (and, for a killed master, its
    # restart as a replica is in sync).
    seconds: float | None = None
    error: str | None = None

    @property
    def ended(self) -> float:
        return self.at + (self.seconds or 0.0)

    def to_json(self, origin: float) -> dict[str, Any]:
        return {**asdict(self), "t": round(self.at - origin, 2)}

    def line(self, origin: float) -> str:
        took = "" if self.seconds is None else f" ({self.seconds:.1f} s)"
        failed = f" FAILED: {self.error}" if self.error else ""
        return f"t+{self.at - origin:7.1f}s {self.label:<20} {self.detail}{took}{failed}"


def chaos_events(events: list[Event]) -> list[Event]:
    """The events done to the stack (not the soak's own start, stop and drain)."""
    return [e for e in events if not e.kind.startswith(("soak-", "drained"))]


class Timeline:
    """Events in order, each also written at once to `log_path` with its wall time."""

    def __init__(self, log_path: Path, origin: float) -> None:
        self.origin = origin
        self.events: list[Event] = []
        self._log_path = log_path
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def begin(self, kind: str) -> Event:
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            return Event(at=time.time(), kind=kind, label=f"{kind}#{self._counts[kind]}")

    def record(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            stamp = datetime.fromtimestamp(event.at, UTC).isoformat(timespec="milliseconds")
            with self._log_path.open("a") as log:
                log.write(f"{stamp} {event.line(self.origin)}\n")

    def note(self, kind: str, detail: str) -> None:
        """An instantaneous event (the soak started, stopped)."""
        event = self.begin(kind)
        event.detail = detail
        self.record(event)
