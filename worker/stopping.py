"""When a running job must stop: cancel, deadline and soft time limit per step; the hard limit.

The soft checks run in the step callback, so they take effect between two
denoising steps. A step that never returns cannot be stopped from inside: the
hard-limit watchdog then ends the worker process and the reaper hands the job
to another worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from shared.cancel import cancel_requested
from shared.constants import PROGRESS_WRITE_INTERVAL_S
from shared.jobs import DEADLINE_ERROR, JobErrorInfo, JobRecord, JobStatus
from shared.store import JobStore

log = logging.getLogger(__name__)

# The worker's exit status when a job outran its hard time limit (EX_SOFTWARE).
HARD_LIMIT_EXIT_CODE = 70


class JobStopped(Exception):
    """Raised from the step callback to stop a job: canceled, past its deadline or time limit."""

    def __init__(self, error: JobErrorInfo | None, status: JobStatus = JobStatus.CANCELED):
        super().__init__(error.message if error else "canceled")
        self.error = error
        self.status = status


@dataclass(frozen=True)
class TimeLimits:
    """Soft: the job fails at its next step. Hard: the worker exits (a step that never
    returns cannot be stopped from inside); the reaper retries the job elsewhere."""

    soft_s: float = 600.0
    hard_s: float = 900.0


class StepMonitor:
    """Called after every denoising step: stops canceled jobs, writes throttled progress."""

    def __init__(
        self,
        store: JobStore,
        record: JobRecord,
        soft_limit_s: float = float("inf"),
        interval_s: float = PROGRESS_WRITE_INTERVAL_S,
        check_cancel: bool = True,
    ):
        self.store = store
        self.check_cancel = check_cancel
        self.record = record
        self.soft_limit_s = soft_limit_s
        self.interval_s = interval_s
        self._started = time.monotonic()
        self._last_write = 0.0
        self._warned = False

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        self._check(now, done, total)
        # The final step is written by the success transition, with the images.
        if done >= total or now - self._last_write < self.interval_s:
            return
        self._last_write = now
        with self._redis_may_be_away("progress not written"):
            self.store.report_progress(self.record, round(done / total, 4))

    @contextmanager
    def _redis_may_be_away(self, consequence: str) -> Iterator[None]:
        """Progress and cancel checks are best effort: Redis away for a moment (a
        failover) must not fail a job that is computing; said once per job."""
        try:
            yield
        except redis.RedisError as exc:
            if not self._warned:
                self._warned = True
                log.warning("job %s: Redis unreachable (%s); %s", self.record.id, exc, consequence)

    def _check(self, now: float, done: int, total: int) -> None:
        """Raise JobStopped if the job must not take another step."""
        # One EXISTS per step (~0.1 ms): a cancel takes effect within one step.
        canceled = False
        if self.check_cancel or done >= total:
            with self._redis_may_be_away("cancel requests not seen"):
                canceled = cancel_requested(self.store.redis, self.record.id)
        if canceled:
            raise JobStopped(None)
        if self.record.past_deadline():
            raise JobStopped(DEADLINE_ERROR)
        if now - self._started > self.soft_limit_s:
            raise JobStopped(
                JobErrorInfo(
                    type="time_limit_exceeded",
                    message=f"the job ran longer than its time limit of {self.soft_limit_s:g}s",
                ),
                JobStatus.FAILED,
            )


class BatchMonitor:
    """The step callback of a batched call: one StepMonitor per job.

    A job that must stop (cancel, deadline) is recorded at once and its slot
    computed to the end and thrown away; the others run on. The call itself is
    stopped only when no job in it is left to finish.
    """

    def __init__(
        self, monitors: list[StepMonitor], record_stop: Callable[[JobRecord, JobStopped], JobStatus]
    ):
        self.monitors = monitors
        self.record_stop = record_stop
        self.stopped: dict[str, JobStatus] = {}

    @property
    def active(self) -> list[JobRecord]:
        return [m.record for m in self.monitors if m.record.id not in self.stopped]

    def __call__(self, done: int, total: int) -> None:
        for monitor in self.monitors:
            if monitor.record.id in self.stopped:
                continue
            try:
                monitor(done, total)
            except JobStopped as stop:
                self.stopped[monitor.record.id] = self.record_stop(monitor.record, stop)
        if len(self.stopped) == len(self.monitors):
            raise JobStopped(None)


@contextmanager
def hard_limit(label: str, limit_s: float) -> Iterator[None]:
    """End the worker process if the block runs longer than `limit_s` (`label` names the jobs)."""
    watchdog = start_hard_limit(label, limit_s)
    try:
        yield
    finally:
        watchdog.cancel()


def start_hard_limit(
    label: str, limit_s: float, generated: Callable[[], bool] | None = None
) -> threading.Timer:
    """End the worker process in `limit_s` unless the returned timer is canceled first,
    or `generated()` says the pipeline call has returned by then (what is left, storing
    the images, is bound by STORAGE_RETRY_S instead)."""
    watchdog = threading.Timer(limit_s, _hard_limit_exit, (label, limit_s, generated))
    watchdog.daemon = True
    watchdog.start()
    return watchdog


def _hard_limit_exit(
    job_ids: str, limit_s: float, generated: Callable[[], bool] | None = None
) -> None:
    if generated is not None and generated():
        return
    log.critical(
        "job %s exceeded the hard time limit of %.0fs: exiting the worker", job_ids, limit_s
    )
    logging.shutdown()
    os._exit(HARD_LIMIT_EXIT_CODE)
