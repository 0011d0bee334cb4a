"""How a job ended, recorded: its images stored and success written, a stop, or a failure.

A failed job is data (status failed, error type and message), never a crashed
worker. A job whose record moved on meanwhile (canceled at the last step,
handed to another worker) is logged and left as it is. Images that storage
cannot take yet wait in the worker's spool (worker.storing): the job's outcome
is then recorded once they are stored, given up on or canceled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from PIL import Image

from shared.errors import DarkroomError, InvalidTransition, JobNotFound
from shared.jobs import JobErrorInfo, JobRecord, JobStatus, StoredImage
from shared.store import JobStore
from worker import failover, inference
from worker.devices import free_memory
from worker.metrics import JOBS_FINISHED, RUN
from worker.png_metadata import PngMetadata
from worker.stopping import JobStopped
from worker.storing import Storer, Upload

log = logging.getLogger(__name__)


@dataclass
class Outcomes:
    """Writes a job's terminal status for the worker serving `model_name`."""

    store: JobStore
    storer: Storer
    model_name: str
    # The parameters each stored PNG carries (None: PNG_METADATA off, none).
    metadata: PngMetadata | None = None

    def succeed(
        self,
        record: JobRecord,
        images: list[Image.Image],
        started: float,
        batch_size: int,
        inference_s: float | None = None,
    ) -> JobStatus:
        """Store the images and record success: the status the job ends with, or
        RUNNING while its images wait for storage (recorded once they are stored)."""
        try:
            uploads, stored = encode_images(record, images, self.metadata)
        except Exception as exc:  # noqa: BLE001 -- a job's failure is data
            return self.fail(record, exc)

        def finish(problem: Exception | None) -> JobStatus:
            if isinstance(problem, JobStopped):  # canceled while its images waited
                return self.stop(record, problem)
            if problem is not None:
                return self.fail(record, problem)
            return self._succeeded(record, stored, started, batch_size, inference_s)

        return self.storer.store(record.id, uploads, finish)

    def _succeeded(
        self,
        record: JobRecord,
        stored: list[StoredImage],
        started: float,
        batch_size: int,
        inference_s: float | None,
    ) -> JobStatus:
        """Record the success of a job whose images are stored."""
        if not self._record_success(record, stored, batch_size, inference_s):
            return self._current_status(record.id)
        log.info(
            "job %s succeeded: %d image(s) in %.2fs on %s%s",
            record.id,
            len(stored),
            time.monotonic() - started,
            record.model_used or self.model_name,
            f" (batch of {batch_size})" if batch_size > 1 else "",
        )
        return JobStatus.SUCCEEDED

    def stop(self, record: JobRecord, stop: JobStopped) -> JobStatus:
        """Record a job stopped before it finished (canceled, deadline, soft time limit)."""
        why = stop.error.message if stop.error else "canceled by the client"
        log.info("job %s stopped before it finished (%s): %s", record.id, stop.status, why)
        try:
            self._finished(
                failover.transition(self.store, record.id, stop.status, error=stop.error)
            )
        except (InvalidTransition, JobNotFound) as lost:
            log.warning("could not record the stop of job %s: %s", record.id, lost)
        return stop.status

    def fail(self, record: JobRecord, exc: Exception) -> JobStatus:
        """Record a job failed by `exc`, classified into an error type and message."""
        error = error_info(exc)
        log.error("job %s failed: %s: %s", record.id, error.type, error.message, exc_info=exc)
        try:
            self._finished(
                failover.transition(self.store, record.id, JobStatus.FAILED, error=error)
            )
        except (InvalidTransition, JobNotFound) as lost:
            log.warning("could not record failure of job %s: %s", record.id, lost)
        return JobStatus.FAILED

    def _record_success(
        self,
        record: JobRecord,
        stored: list[StoredImage],
        size: int,
        inference_s: float | None,
    ) -> bool:
        try:
            finished = failover.transition(
                self.store,
                record.id,
                JobStatus.SUCCEEDED,
                images=stored,
                progress=1.0,
                batch_size=size,
                inference_s=None if inference_s is None else round(inference_s, 6),
            )
        except (InvalidTransition, JobNotFound) as exc:
            # Canceled at the last step, or handed to another worker meanwhile.
            log.warning("job %s finished but was not recorded as succeeded: %s", record.id, exc)
            return False
        self._finished(finished)
        return True

    def _finished(self, record: JobRecord) -> None:
        """Count a terminal status this worker wrote, and how long the job ran."""
        model = record.model_used or self.model_name
        JOBS_FINISHED.labels(model, record.status.value).inc()
        if record.started_at is not None and record.finished_at is not None:
            ran = (record.finished_at - record.started_at).total_seconds()
            RUN.labels(model).observe(max(0.0, ran))

    def _current_status(self, job_id: str) -> JobStatus:
        record = self.store.get_or_none(job_id)
        return record.status if record is not None else JobStatus.CANCELED


def encode_images(
    record: JobRecord, images: list[Image.Image], metadata: PngMetadata | None = None
) -> tuple[list[Upload], list[StoredImage]]:
    """A job's images as PNGs to store under jobs/<job id>/<index>.png (carrying their
    parameters, with `metadata`), and as the record will list them."""
    uploads, stored = [], []
    for index, image in enumerate(images):
        # Keyed by job and index: a re-run overwrites, never duplicates.
        key = f"jobs/{record.id}/{index}.png"
        text = metadata.chunks(record, index) if metadata is not None else None
        uploads.append(Upload(key, inference.encode_png(image, text), "image/png"))
        width, height = image.size
        stored.append(
            StoredImage(key=key, width=width, height=height, seed=record.params.seed + index)
        )
    return uploads, stored


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is torch.cuda.OutOfMemoryError (matched by name)."""
    return type(exc).__name__ == "OutOfMemoryError"


def error_info(exc: Exception) -> JobErrorInfo:
    """A job's error as the client sees it; frees GPU memory after an out-of-memory error."""
    if isinstance(exc, DarkroomError):
        return JobErrorInfo(type=exc.type, message=str(exc))
    if is_out_of_memory(exc):
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
