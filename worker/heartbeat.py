"""A thread that keeps this worker's status record alive in Redis."""

from __future__ import annotations

import contextlib
import logging
import threading

import redis

from shared.constants import WORKER_HEARTBEAT_INTERVAL_S
from shared.workers import WorkerInfo, remove_worker, write_worker

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, client: redis.Redis, info: WorkerInfo):
        self.client = client
        self.info = info
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="darkroom-heartbeat", daemon=True)

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def update(self, **fields: object) -> None:
        """Change fields of the record and write it at once."""
        with self._lock:
            self.info = self.info.model_copy(update=fields)
        self.beat()

    def beat(self) -> None:
        with self._lock:
            info = self.info
        try:
            write_worker(self.client, info)
        except redis.RedisError as exc:
            # Redis being away must not stop generation; the record returns with it.
            log.warning("heartbeat write failed: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(redis.RedisError):  # it expires on its own otherwise
            remove_worker(self.client, self.info.name)

    def _loop(self) -> None:
        while not self._stopped.wait(WORKER_HEARTBEAT_INTERVAL_S):
            self.beat()
