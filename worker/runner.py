"""Run one job: claim it, generate, store the images, record the outcome.

Knows the job store and storage; leaves Celery to tasks.py and torch to
inference.py. A failed job is data (status failed, error type and message),
never a crashed worker.
"""

from __future__ import annotations

import logging
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
    """Raised from the step callback to stop a job that was canceled or ran past its deadline."""

    def __init__(self, error: JobErrorInfo | None):
        super().__init__(error.message if error else "canceled")
        self.error = error


class StepMonitor:
    """Called after every denoising step: stops canceled jobs, writes throttled progress."""

    def __init__(
        self,
        store: JobStore,
        record: JobRecord,
        interval_s: float = PROGRESS_WRITE_INTERVAL_S,
    ):
        self.store = store
        self.record = record
        self.interval_s = interval_s
        self._last_write = 0.0

    def __call__(self, done: int, total: int) -> None:
        # One EXISTS per step (~0.1 ms): a cancel takes effect within one step.
        if cancel_requested(self.store.redis, self.record.id):
            raise JobStopped(None)
        if self.record.past_deadline():
            raise JobStopped(DEADLINE_ERROR)
        now = time.monotonic()
        if done < total and now - self._last_write < self.interval_s:
            return
        self._last_write = now
        # The final step is written by the success transition, with the images.
        self.store.report_progress(self.record, round(min(done / total, 0.99), 4))


@dataclass
class JobRunner:
    store: JobStore
    storage: Storage
    model: LoadedModel
    worker_name: str
    prompts: PromptOptimizer | None = None

    def run(self, job_id: str) -> JobStatus | None:
        """Run a job to a terminal status; None when it was not ours to run."""
        record = self._claim(job_id)
        if record is None:
            return None
        started = time.monotonic()
        try:
            params = self._optimize_prompt(record)
            images = inference.generate(
                self.model,
                params,
                self.store.get_input(job_id),
                on_step=StepMonitor(self.store, record),
            )
            stored = self._store_images(record, images)
        except JobStopped as stop:
            return self._stop(record, stop.error)
        except Exception as exc:  # a job's failure is recorded; the worker serves on
            return self._fail(record, exc)
        self.store.transition(job_id, JobStatus.SUCCEEDED, images=stored, progress=1.0)
        log.info(
            "job %s succeeded: %d image(s) in %.2fs on %s",
            job_id,
            len(stored),
            time.monotonic() - started,
            self.model.name,
        )
        return JobStatus.SUCCEEDED

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

    def _stop(self, record: JobRecord, error: JobErrorInfo | None) -> JobStatus:
        why = error.message if error else "canceled by the client"
        log.info("job %s stopped mid-generation: %s", record.id, why)
        try:
            self.store.transition(record.id, JobStatus.CANCELED, error=error)
        except (InvalidTransition, JobNotFound) as lost:
            log.warning("could not record cancel of job %s: %s", record.id, lost)
        return JobStatus.CANCELED

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
    return JobErrorInfo(type="generation_error", message=f"{type(exc).__name__}: {exc}"[:1000])
