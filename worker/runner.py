"""Run one job: claim it, generate, store the images, record the outcome.

Knows the job store and storage; leaves Celery to tasks.py and torch to
inference.py. A failed job is data (status failed, error type and message),
never a crashed worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from shared.cancel import cancel_requested
from shared.constants import PROGRESS_WRITE_INTERVAL_S
from shared.errors import DarkroomError, InvalidTransition, JobNotFound
from shared.jobs import (
    DEADLINE_ERROR,
    GenerationParams,
    JobErrorInfo,
    JobRecord,
    JobStatus,
    StoredImage,
)
from shared.storage import Storage
from shared.store import JobStore
from worker import inference
from worker.loader import LoadedModel
from worker.prompts import PromptOptimizer

log = logging.getLogger(__name__)


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


def _hard_limit_exit(job_id: str, limit_s: float) -> None:
    log.critical(
        "job %s exceeded the hard time limit of %.0fs: exiting the worker", job_id, limit_s
    )
    logging.shutdown()
    os._exit(70)


class StepMonitor:
    """Called after every denoising step: stops canceled jobs, writes throttled progress."""

    def __init__(
        self,
        store: JobStore,
        record: JobRecord,
        soft_limit_s: float = float("inf"),
        interval_s: float = PROGRESS_WRITE_INTERVAL_S,
    ):
        self.store = store
        self.record = record
        self.soft_limit_s = soft_limit_s
        self.interval_s = interval_s
        self._started = time.monotonic()
        self._last_write = 0.0

    def __call__(self, done: int, total: int) -> None:
        # One EXISTS per step (~0.1 ms): a cancel takes effect within one step.
        if cancel_requested(self.store.redis, self.record.id):
            raise JobStopped(None)
        if self.record.past_deadline():
            raise JobStopped(DEADLINE_ERROR)
        now = time.monotonic()
        if now - self._started > self.soft_limit_s:
            raise JobStopped(
                JobErrorInfo(
                    type="time_limit_exceeded",
                    message=f"the job ran longer than its time limit of {self.soft_limit_s:g}s",
                ),
                JobStatus.FAILED,
            )
        # The final step is written by the success transition, with the images.
        if done >= total or now - self._last_write < self.interval_s:
            return
        self._last_write = now
        self.store.report_progress(self.record, round(done / total, 4))


@dataclass
class JobRunner:
    store: JobStore
    storage: Storage
    model: LoadedModel
    worker_name: str
    prompts: PromptOptimizer | None = None
    time_limits: TimeLimits = TimeLimits()

    def run(self, job_id: str) -> JobStatus | None:
        """Run a job to a terminal status; None when it was not ours to run."""
        record = self._claim(job_id)
        if record is None:
            return None
        started = time.monotonic()
        watchdog = threading.Timer(
            self.time_limits.hard_s, _hard_limit_exit, (job_id, self.time_limits.hard_s)
        )
        watchdog.daemon = True
        watchdog.start()
        try:
            stored = self._generate(record)
        except JobStopped as stop:
            return self._stop(record, stop)
        except Exception as exc:  # a job's failure is recorded; the worker serves on
            return self._fail(record, exc)
        finally:
            watchdog.cancel()
        try:
            self.store.transition(job_id, JobStatus.SUCCEEDED, images=stored, progress=1.0)
        except (InvalidTransition, JobNotFound) as exc:
            # Canceled at the last step, or handed to another worker meanwhile.
            log.warning("job %s finished but was not recorded as succeeded: %s", job_id, exc)
            return None
        log.info(
            "job %s succeeded: %d image(s) in %.2fs on %s",
            job_id,
            len(stored),
            time.monotonic() - started,
            self.model.name,
        )
        return JobStatus.SUCCEEDED

    def _generate(self, record: JobRecord) -> list[StoredImage]:
        params = self._optimize_prompt(record)
        images = inference.generate(
            self.model,
            params,
            self.store.get_input(record.id) if params.mode == "img2img" else None,
            on_step=StepMonitor(self.store, record, self.time_limits.soft_s),
        )
        return self._store_images(record, images)

    def _claim(self, job_id: str) -> JobRecord | None:
        try:
            current = self.store.get(job_id)
            if current.status is JobStatus.QUEUED and current.past_deadline():
                self.store.transition(job_id, JobStatus.CANCELED, error=DEADLINE_ERROR)
                log.info("job %s reached its deadline in the queue; not running it", job_id)
                return None
            return self.store.transition(
                job_id,
                JobStatus.RUNNING,
                model_used=self.model.name,
                worker=self.worker_name,
                attempts=current.attempts + 1,
                progress=0.0,
            )
        except JobNotFound:
            log.warning("job %s has no record (expired or deleted); dropping it", job_id)
        except InvalidTransition as exc:
            log.info("not running job %s: %s", job_id, exc)
        return None

    def _optimize_prompt(self, record: JobRecord) -> GenerationParams:
        if self.prompts is None:
            return record.params
        optimized = self.prompts.optimize(record.params.prompt, self.model.entry.params.max_tokens)
        if optimized is None:
            return record.params
        params = record.params.model_copy(update={"optimized_prompt": optimized})
        self.store.update(record.id, params=params)
        log.info("job %s: prompt optimised to %r", record.id, optimized)
        return params

    def _store_images(self, record: JobRecord, images: list) -> list[StoredImage]:
        stored = []
        for index, image in enumerate(images):
            # Keyed by job and index: a re-run overwrites, never duplicates.
            key = f"jobs/{record.id}/{index}.png"
            self.storage.put(key, inference.encode_png(image), "image/png")
            width, height = image.size
            stored.append(
                StoredImage(key=key, width=width, height=height, seed=record.params.seed + index)
            )
        return stored

    def _stop(self, record: JobRecord, stop: JobStopped) -> JobStatus:
        why = stop.error.message if stop.error else "canceled by the client"
        log.info("job %s stopped mid-generation (%s): %s", record.id, stop.status, why)
        try:
            self.store.transition(record.id, stop.status, error=stop.error)
        except (InvalidTransition, JobNotFound) as lost:
            log.warning("could not record the stop of job %s: %s", record.id, lost)
        return stop.status

    def _fail(self, record: JobRecord, exc: Exception) -> JobStatus:
        error = _error_info(exc)
        log.error("job %s failed: %s: %s", record.id, error.type, error.message, exc_info=exc)
        try:
            self.store.transition(record.id, JobStatus.FAILED, error=error)
        except (InvalidTransition, JobNotFound) as lost:
            log.warning("could not record failure of job %s: %s", record.id, lost)
        return JobStatus.FAILED


def _error_info(exc: Exception) -> JobErrorInfo:
    if isinstance(exc, DarkroomError):
        return JobErrorInfo(type=exc.type, message=str(exc))
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
        inference.free_memory()
        return JobErrorInfo(
            type="out_of_memory",
            message=(
                f"the GPU ran out of memory: {str(exc).splitlines()[0][:300]} "
                "(try a smaller size or num_images, or set runtime.memory.use_8bit / "
                "enable_cpu_offload in model_config.yaml)"
            ),
        )
    return JobErrorInfo(type="generation_error", message=f"{type(exc).__name__}: {exc}"[:1000])
