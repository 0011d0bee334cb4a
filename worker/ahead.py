"""One job ahead on the engine process: prepare the next job while one denoises.

The job is prepared (record, inputs, optimised prompt) and its call submitted
while the engine still runs the one before it. It stays queued until the
engine starts its call, and is claimed at that moment: its queue position, a
cancel and a higher-priority job overtaking it all work as for any waiting
job, and its Celery message stays unacknowledged until the claim, so a worker
dying here loses nothing. Once claimed, its outcome is left to the finisher
and the Celery task returns, so the next message is taken at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from shared.held import hold, release
from shared.jobs import JobRecord, JobStatus
from worker.engine import Call, ProcessEngine
from worker.metrics import BATCH_SIZE, INFERENCE, set_gpu_memory
from worker.overtaking import overtaker
from worker.pipeline_call import Request
from worker.stopping import JobHandedBack, JobStopped, StepMonitor, start_hard_limit

if TYPE_CHECKING:
    from worker.runner import JobRunner

log = logging.getLogger(__name__)

# How often a job prepared ahead looks for a higher-priority job while it waits
# for the device (one small Redis pipeline each time).
OVERTAKE_POLL_S = 0.05


@dataclass(frozen=True)
class AheadRunner:
    """The engine-process path of `runner` for jobs that run alone."""

    runner: JobRunner
    engine: ProcessEngine

    def run(self, record: JobRecord) -> JobStatus | None:
        """RUNNING once the job is claimed and computing; None if it was not ours to
        run after all (canceled, taken, expired while it waited). Raises
        JobHandedBack if the worker stops before the job could start."""
        jobs = self.runner
        try:
            request = jobs.prepare(record)
        except Exception as exc:  # noqa: BLE001 -- a job's failure is data
            return self._fail_unprepared(record, exc)
        with self._held(record.id):
            call = self._start(request, record)
            running: JobRecord | None = None
            try:
                running = jobs.claims.claim(record.id)
            finally:
                if running is None:
                    # Canceled or taken while it waited (or Redis stayed away): its
                    # images are not wanted.
                    self.engine.stop(call)
        if running is None:
            return None
        started = time.monotonic()
        jobs.mark_started([running.id])
        BATCH_SIZE.labels(jobs.model.name).observe(1)
        # Cancels are checked by the engine, between two steps; the monitor writes
        # progress and watches the deadline and the soft time limit.
        call.on_step = StepMonitor(
            jobs.store,
            running,
            jobs.time_limits.soft_s,
            check_cancel=not self.engine.checks_cancels,
        )
        # The hard limit bounds generation only: once the call is done, storing the
        # images (by the finisher, perhaps after the job before it) is bound by
        # STORAGE_RETRY_S, and the deadline was checked at each step.
        watchdog = start_hard_limit(running.id, jobs.time_limits.hard_s, call.finished.is_set)

        def record_outcome() -> None:
            try:
                self._record(running, call, started)
            finally:
                watchdog.cancel()
                jobs.mark_finished(1)

        if jobs.finisher is None:
            record_outcome()
        else:
            jobs.finisher.submit(running.id, record_outcome)
        return JobStatus.RUNNING

    @contextlib.contextmanager
    def _held(self, job_id: str) -> Iterator[None]:
        """While the job waits for the device, the reaper knows this worker holds its
        message (shared.held). Best effort: Redis away only narrows what it knows."""
        client = self.runner.store.redis
        with contextlib.suppress(redis.RedisError):
            hold(client, job_id, self.runner.worker_name)
        try:
            yield
        finally:
            with contextlib.suppress(redis.RedisError):
                release(client, job_id)

    def _fail_unprepared(self, record: JobRecord, exc: Exception) -> JobStatus | None:
        """Record the failure of a job whose inputs could not be prepared."""
        jobs = self.runner
        running = jobs.claims.claim(record.id)
        if running is None:
            return None
        jobs.mark_started([running.id])
        try:
            return jobs.outcomes.fail(running, exc)
        finally:
            jobs.mark_finished(1)

    def _start(self, request: Request, record: JobRecord) -> Call:
        """Submit the job's call; return it once the engine started it."""
        while True:
            call = self.engine.submit([request], cancel_ids=(record.id,))
            if self._wait_for_device(call, record):
                return call

    def _wait_for_device(self, call: Call, record: JobRecord) -> bool:
        """True once `call` started. While it waits, a higher-priority job that shows
        up takes its place and runs first (False: submit again); a stopping worker
        hands the job back."""
        while not call.started.wait(OVERTAKE_POLL_S):
            handing_back = self.runner.handing_back
            first = None if handing_back else self._overtaker(record)
            if first is None and not handing_back:
                continue
            if not self.engine.withdraw(call):
                call.started.wait()  # it started meanwhile: its event is on the way
                return True
            if first is None:
                raise JobHandedBack(record.id)
            log.info("job %s lets %s (priority %s) go first", record.id, first.id, first.priority)
            self.run(first)
            return False
        return True

    def _overtaker(self, record: JobRecord) -> JobRecord | None:
        # Best effort: with Redis away for a moment (a failover) the job keeps its turn.
        try:
            return overtaker(self.runner.store, self.runner.queues, record)
        except redis.RedisError:
            return None

    def _record(self, record: JobRecord, call: Call, started: float) -> JobStatus:
        """The outcome of a job's call on the engine process, recorded."""
        outcomes, model = self.runner.outcomes, self.runner.model
        try:
            images = call.result()
        except JobStopped as stop:
            return outcomes.stop(record, stop)
        except Exception as exc:  # noqa: BLE001 -- a job's failure is data
            return outcomes.fail(record, exc)
        finally:
            if call.seconds is not None:
                INFERENCE.labels(model.name).observe(call.seconds)
            set_gpu_memory(model.plan.device, self.runner.gpu_memory())
        return outcomes.succeed(record, images[0], started, 1, call.seconds)
