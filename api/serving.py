"""Which models the live workers can serve now, for submissions and model lists.

A job for a model no live worker may load would wait for ever (until
COMPAT_WAIT_S turns a compatible call into a 504): it is refused at submit
instead, unless the registry marks the model `autoscaled` (workers for it come
on demand) or no worker is live at all (they may be starting). Read from the
workers' records (each lists the models it may load, and where it holds them),
at most once a second per API process.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import redis

from shared.errors import ModelNotServed
from shared.registry import Registry
from shared.workers import WorkerInfo, live_workers

# How long one reading of the workers stands.
FRESH_S = 1.0


@dataclass(frozen=True)
class Serving:
    # Whether any worker is live (none: every model is accepted, they may be starting).
    live: bool = False
    # Models some live worker may load (WORKER_MODELS, or the one it runs).
    loadable: frozenset[str] = frozenset()
    # Models some live worker holds on its device.
    resident: frozenset[str] = frozenset()

    def servable(self, name: str, registry: Registry) -> bool:
        entry = registry.models.get(name)
        return entry is not None and (not self.live or entry.autoscaled or name in self.loadable)

    @classmethod
    def of_workers(cls, workers: list[WorkerInfo]) -> Serving:
        loadable: set[str] = set()
        resident: set[str] = set()
        for worker in workers:
            loadable.update(worker.loadable)
            held = {m for m, tier in worker.models.items() if tier == "device"}
            resident.update(held or ({worker.model} if worker.model else set()))
        live = any(w.state != "no_model" for w in workers)
        return cls(live, frozenset(loadable), frozenset(resident))

    def check(self, name: str, registry: Registry) -> None:
        """ModelNotServed (naming the model and what is servable) unless `name` is;
        a name the registry does not know is left to the request's own checks."""
        if name in registry.models and not self.servable(name, registry):
            can = sorted(n for n in registry.models if self.servable(n, registry))
            raise ModelNotServed(name, can)


@dataclass
class ServingView:
    """The last reading, refreshed when older than FRESH_S (one reader at a time)."""

    client: redis.Redis
    _last: Serving = field(default_factory=Serving)
    _read_at: float = -1e9
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self) -> Serving:
        if time.monotonic() - self._read_at < FRESH_S:
            return self._last
        async with self._lock:
            if time.monotonic() - self._read_at >= FRESH_S:
                self._last = await self._read()
                self._read_at = time.monotonic()
        return self._last

    async def _read(self) -> Serving:
        return Serving.of_workers(await asyncio.to_thread(live_workers, self.client))
