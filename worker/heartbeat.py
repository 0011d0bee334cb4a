"""A thread that keeps this worker's status record alive in Redis."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import redis

from shared.workers import WorkerInfo, claim_worker, read_worker, remove_worker, write_worker

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        client: redis.Redis,
        info: WorkerInfo,
        ttl_s: float = 15.0,
        on_beat: Callable[[], object] | None = None,
    ):
        self.client = client
        self.info = info
        self.ttl_s = ttl_s
        # Three beats per TTL: one lost write never makes a live worker look dead.
        self.interval_s = ttl_s / 3
        self.on_beat = on_beat
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        # Set by update_soon: write the record now, from the heartbeat's thread.
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="darkroom-heartbeat", daemon=True)

    def claim(self, wait_s: float, poll_s: float = 0.25) -> WorkerInfo | None:
        """Take this worker's name: None once it is ours, else the live worker holding it.

        A record still there may be a dead predecessor's (a container restarted
        under a fixed --name): it expires within one TTL, so wait up to `wait_s`
        for that before giving up. A live holder keeps rewriting it.
        """
        deadline = time.monotonic() + wait_s
        while not claim_worker(self.client, self.info, self.ttl_s):
            holder = read_worker(self.client, self.info.name)
            if holder is not None and time.monotonic() >= deadline:
                return holder
            time.sleep(poll_s)
        return None

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def update(self, **fields: object) -> None:
        """Change fields of the record and write it at once."""
        with self._lock:
            self.info = self.info.model_copy(update=fields)
        self.beat()

    def update_soon(self, **fields: object) -> None:
        """Change fields of the record; the heartbeat's thread writes it right away.

        For the busy/ready flips around every job: the job's own thread does not
        wait for the write (a serialisation and a round trip per flip, between
        two pipeline calls). Consecutive flips may be written as one.
        """
        with self._lock:
            self.info = self.info.model_copy(update=fields)
        self._changed.set()

    def beat(self) -> None:
        with self._lock:
            info = self.info
        try:
            write_worker(self.client, info, self.ttl_s)
        except redis.RedisError as exc:
            # Redis being away must not stop generation; the record returns with it.
            log.warning("heartbeat write failed: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        self._changed.set()  # wakes the thread, which sees it stopped
        with contextlib.suppress(redis.RedisError):  # it expires on its own otherwise
            remove_worker(self.client, self.info.name)

    def _loop(self) -> None:
        next_beat = time.monotonic() + self.interval_s
        while True:
            self._changed.wait(max(0.0, next_beat - time.monotonic()))
            if self._stopped.is_set():
                return
            self._changed.clear()
            self.beat()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.interval_s
                self._on_beat()

    def _on_beat(self) -> None:
        if self.on_beat is not None:
            try:
                self.on_beat()
            except Exception as exc:  # noqa: BLE001 -- the heartbeat must outlive any reaper failure
                log.warning("heartbeat task failed: %s", exc)
