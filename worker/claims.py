"""Claiming a job the scheduler gave this worker: queued -> running, or the reason not to
run it (canceled, past its deadline, gone)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from shared.errors import InvalidTransition, JobNotFound
from shared.jobs import DEADLINE_ERROR, JobRecord, JobStatus
from shared.store import JobStore
from worker import failover
from worker.metrics import JOBS_FINISHED, QUEUE_WAIT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimer:
    """Moves jobs to running under `worker_name`, serving `model_name`."""

    store: JobStore
    model_name: str
    worker_name: str

    def queued(self, job_id: str) -> JobRecord | None:
        """The job's record if it waits to be run; None (and why, logged) if not."""
        current = failover.retrying(
            lambda: self.store.get_or_none(job_id), f"reading job {job_id} to claim it"
        )
        if current is None:
            log.warning("job %s has no record (expired or deleted); dropping it", job_id)
            return None
        if current.status is not JobStatus.QUEUED:
            # Canceled as it was given to this worker, or finished meanwhile.
            log.info("job %s is %s; not running it", job_id, current.status)
            return None
        return current

    def claim_queued(self, current: JobRecord, model: str | None = None) -> JobRecord | None:
        """queued -> running for this worker, on `model` (default: the worker's); None
        if someone else moved it first."""
        model_used = model or self.model_name
        try:
            if current.past_deadline():
                failover.transition(
                    self.store, current.id, JobStatus.CANCELED, error=DEADLINE_ERROR
                )
                JOBS_FINISHED.labels(model_used, JobStatus.CANCELED.value).inc()
                log.info("job %s reached its deadline in the queue; not running it", current.id)
                return None
            running = failover.transition(
                self.store,
                current.id,
                JobStatus.RUNNING,
                model_used=model_used,
                worker=self.worker_name,
                attempts=current.attempts + 1,
                progress=0.0,
            )
            if running.started_at is not None:
                waited = (running.started_at - running.created_at).total_seconds()
                QUEUE_WAIT.labels(model_used).observe(max(0.0, waited))
            return running
        except JobNotFound:
            log.warning("job %s has no record (expired or deleted); dropping it", current.id)
        except InvalidTransition as exc:
            log.info("not running job %s: %s", current.id, exc)
        return None
