"""Which running jobs someone watches, told to the engine; their previews, stored.

The engine makes previews only of the requests the worker names (a bit mask per
call): the worker asks Redis who is watching when a call starts and every
WATCH_CHECK_S while it runs (one pipelined EXISTS for the call's jobs), and
stores each preview that comes back as the job's latest (shared.previews).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import redis

from shared.previews import PreviewStore, watched_jobs
from worker.call_types import StepCallback
from worker.metrics import PREVIEW_SECONDS, PREVIEWS

log = logging.getLogger(__name__)

# How often a running call's watchers are looked up: a stream opened mid-job
# sees its first preview within this (and the preview interval).
WATCH_CHECK_S = 0.25


class _Call(Protocol):
    preview_mask: int


class _Engine(Protocol):
    def want_previews(self, call: Any, mask: int) -> None: ...


class PreviewWatch:
    """The watchers and previews of one pipeline call's jobs (`job_ids`, in the order
    of the call's requests; None for a request whose job is not running)."""

    def __init__(
        self,
        client: redis.Redis,
        engine: _Engine,
        call: _Call,
        job_ids: list[str | None],
        model: str,
        store: PreviewStore,
    ):
        self.client = client
        self.engine = engine
        self.call = call
        self.job_ids = job_ids
        self.model = model
        self.store = store
        self._checked = float("-inf")
        self._warned = False

    def check(self) -> None:
        """Ask who watches now; tell the engine if that changed."""
        self._checked = time.monotonic()
        running = [job_id for job_id in self.job_ids if job_id is not None]
        try:
            watched = watched_jobs(self.client, running)
        except redis.RedisError as exc:
            self._warn(exc)
            return
        mask = sum(1 << index for index, job_id in enumerate(self.job_ids) if job_id in watched)
        if mask != self.call.preview_mask:
            self.engine.want_previews(self.call, mask)

    def following(self, on_step: StepCallback) -> StepCallback:
        """`on_step`, then a look at the watchers when the last one is WATCH_CHECK_S old."""

        def step(done: int, total: int) -> None:
            on_step(done, total)
            if time.monotonic() - self._checked >= WATCH_CHECK_S:
                self.check()

        return step

    def keep(self, step: int, steps: int, images: dict[int, list[bytes]], seconds: float) -> None:
        """Store the previews the engine made (each job's as its latest)."""
        PREVIEW_SECONDS.labels(self.model).observe(seconds)
        for index, webps in images.items():
            job_id = self.job_ids[index] if index < len(self.job_ids) else None
            if job_id is None:
                continue
            try:
                self.store.store(job_id, step, steps, webps)
            except redis.RedisError as exc:
                self._warn(exc)
                continue
            PREVIEWS.labels(self.model).inc()

    def _warn(self, exc: Exception) -> None:
        if not self._warned:  # best effort, like progress: said once per call
            self._warned = True
            log.warning("previews: Redis unreachable (%s); none this time", exc)
