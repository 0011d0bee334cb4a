"""Run a job (or a batch of them): claim, generate, store the images, record the outcome.

Knows the job store and storage; leaves Celery to tasks.py and torch to
inference.py. A failed job is data (status failed, error type and message),
never a crashed worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image

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
from worker.batching import CompanionFinder, may_lead
from worker.devices import free_memory
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


def _hard_limit_exit(job_ids: str, limit_s: float) -> None:
    log.critical(
        "job %s exceeded the hard time limit of %.0fs: exiting the worker", job_ids, limit_s
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


@dataclass
class JobRunner:
    store: JobStore
    storage: Storage
    model: LoadedModel
    worker_name: str
    prompts: PromptOptimizer | None = None
    time_limits: TimeLimits = TimeLimits()
    batching: CompanionFinder | None = None
    # Told the ids of the jobs about to run (one, or a batch) once they are claimed:
    # the worker record shows them. A message whose job is not ours never calls it.
    on_start: Callable[[list[str]], None] | None = None
    # Jobs this runner took to a terminal status (or tried to): the heartbeat's count.
    jobs_done: int = 0

    def run(self, job_id: str) -> JobStatus | None:
        """Run a job (and any companions batched with it) to a terminal status.

        Returns the job's status; None when it was not ours to run.
        """
        leader = self._claim(job_id)
        if leader is None:
            return None
        batch = [leader]
        if self.batching is not None and may_lead(leader, self.batching.policy):
            batch += self.batching.gather(leader, self._claim_queued)
        if self.on_start is not None:
            self.on_start([r.id for r in batch])
        if len(batch) == 1:
            statuses = {leader.id: self._run_alone(leader)}
        else:
            statuses = self._run_batch(batch)
        self.jobs_done += len(batch)
        return statuses[leader.id]

    def _run_alone(self, record: JobRecord, params: GenerationParams | None = None) -> JobStatus:
        """Run one job; `params` when its prompt was already optimised (a failed batch)."""
        started = time.monotonic()
        with _hard_limit(record.id, self.time_limits.hard_s):
            try:
                params = params or self._optimize_prompt(record)
                images = inference.generate(
                    self.model,
                    params,
                    self._init_image(record),
                    on_step=StepMonitor(self.store, record, self.time_limits.soft_s),
                )
            except JobStopped as stop:
                return self._stop(record, stop)
            except Exception as exc:  # a job's failure is recorded; the worker serves on
                return self._fail(record, exc)
        return self._finish(record, images, started, batch_size=1)

    def _run_batch(self, batch: list[JobRecord]) -> dict[str, JobStatus]:
        started = time.monotonic()
        ids = [r.id for r in batch]
        log.info(
            "running %d jobs in one pipeline call (%d images): %s",
            len(batch),
            sum(r.params.num_images for r in batch),
            ", ".join(ids),
        )
        monitor = BatchMonitor(
            [StepMonitor(self.store, r, self.time_limits.soft_s) for r in batch], self._stop
        )
        failure: Exception | None = None
        params: dict[str, GenerationParams] = {}
        with _hard_limit(",".join(ids), self.time_limits.hard_s):
            try:
                params = dict(zip(ids, self._optimize_prompts(batch), strict=True))
                requests = [inference.Request(params[r.id], self._init_image(r)) for r in batch]
                images = inference.generate_batch(self.model, requests, on_step=monitor)
            except JobStopped:
                return monitor.stopped  # every job in the call stopped, each one recorded
            except Exception as exc:
                failure = exc
        if failure is not None:
            # One bad job (or a batch too large for the GPU) must not fail the
            # others: each job still running gets a pipeline call of its own.
            if _is_out_of_memory(failure):
                free_memory()
            log.warning(
                "batch of %d jobs failed (%s: %s); running each job alone",
                len(batch),
                type(failure).__name__,
                str(failure)[:300],
            )
            alone = {r.id: self._run_alone(r, params.get(r.id)) for r in monitor.active}
            return {**monitor.stopped, **alone}
        statuses = dict(monitor.stopped)
        for record, job_images in zip(batch, images, strict=True):
            if record.id not in statuses:
                statuses[record.id] = self._finish(record, job_images, started, len(batch))
        return statuses

    def _finish(
        self, record: JobRecord, images: list[Image.Image], started: float, batch_size: int
    ) -> JobStatus:
        try:
            stored = self._store_images(record, images)
        except Exception as exc:
            return self._fail(record, exc)
        try:
            self.store.transition(
                record.id,
                JobStatus.SUCCEEDED,
                images=stored,
                progress=1.0,
                batch_size=batch_size,
            )
        except (InvalidTransition, JobNotFound) as exc:
            # Canceled at the last step, or handed to another worker meanwhile.
            log.warning("job %s finished but was not recorded as succeeded: %s", record.id, exc)
            return self._current_status(record.id)
        log.info(
            "job %s succeeded: %d image(s) in %.2fs on %s%s",
            record.id,
            len(stored),
            time.monotonic() - started,
            self.model.name,
            f" (batch of {batch_size})" if batch_size > 1 else "",
        )
        return JobStatus.SUCCEEDED

    def _current_status(self, job_id: str) -> JobStatus:
        record = self.store.get_or_none(job_id)
        return record.status if record is not None else JobStatus.CANCELED

    def _claim(self, job_id: str) -> JobRecord | None:
        current = self.store.get_or_none(job_id)
        if current is None:
            log.warning("job %s has no record (expired or deleted); dropping it", job_id)
            return None
        if current.status is not JobStatus.QUEUED:
            # Run already (batched with another job, or by a worker that then
            # died and was replaced), canceled while queued, or finished.
            log.info("job %s is %s; dropping its message", job_id, current.status)
            return None
        return self._claim_queued(current)

    def _claim_queued(self, current: JobRecord) -> JobRecord | None:
        """queued -> running for this worker; None if someone else moved it first."""
        try:
            if current.past_deadline():
                self.store.transition(current.id, JobStatus.CANCELED, error=DEADLINE_ERROR)
                log.info("job %s reached its deadline in the queue; not running it", current.id)
                return None
            return self.store.transition(
                current.id,
                JobStatus.RUNNING,
                model_used=self.model.name,
                worker=self.worker_name,
                attempts=current.attempts + 1,
                progress=0.0,
            )
        except JobNotFound:
            log.warning("job %s has no record (expired or deleted); dropping it", current.id)
        except InvalidTransition as exc:
            log.info("not running job %s: %s", current.id, exc)
        return None

    def _init_image(self, record: JobRecord) -> bytes | None:
        return self.store.get_input(record.id) if record.params.mode == "img2img" else None

    def _optimize_prompts(self, batch: list[JobRecord]) -> list[GenerationParams]:
        """Each job's parameters with its optimised prompt; the API calls run at once,
        so a batch waits for the slowest answer, not for the sum of them."""
        if self.prompts is None or not self.prompts.active:
            return [r.params for r in batch]
        with ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="prompt") as pool:
            return list(pool.map(self._optimize_prompt, batch))

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

    def _store_images(self, record: JobRecord, images: list[Image.Image]) -> list[StoredImage]:
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


@contextmanager
def _hard_limit(label: str, limit_s: float) -> Iterator[None]:
    watchdog = threading.Timer(limit_s, _hard_limit_exit, (label, limit_s))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


def _is_out_of_memory(exc: Exception) -> bool:
    return type(exc).__name__ == "OutOfMemoryError"  # torch.cuda.OutOfMemoryError


def _error_info(exc: Exception) -> JobErrorInfo:
    if isinstance(exc, DarkroomError):
        return JobErrorInfo(type=exc.type, message=str(exc))
    if _is_out_of_memory(exc):
        free_memory()
        return JobErrorInfo(
            type="out_of_memory",
            message=(
                f"the GPU ran out of memory: {str(exc).splitlines()[0][:300]} "
                "(try a smaller size or num_images, or set runtime.memory.use_8bit / "
                "enable_cpu_offload in model_config.yaml)"
            ),
        )
    return JobErrorInfo(type="generation_error", message=f"{type(exc).__name__}: {exc}"[:1000])
