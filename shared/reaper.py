"""Give back the jobs of dead workers, and fail the jobs that keep killing them.

A worker killed mid-job (OOM kill, driver fault, preempted node) leaves its
job `running`, and the jobs it had reserved to run next still set aside for it
(docs/scheduling.md). Workers refresh a heartbeat record, and whoever runs the
reaper (every worker, and every API process) re-queues the running jobs whose
worker's record expired and gives their reservations back to their queues.
"""

from __future__ import annotations

import logging

from shared.errors import InvalidTransition, JobNotFound
from shared.jobs import JobErrorInfo, JobStatus
from shared.scheduler import Scheduler
from shared.store import JobStore
from shared.workers import alive

log = logging.getLogger(__name__)


def reap_lost_jobs(store: JobStore, scheduler: Scheduler, max_attempts: int) -> list[str]:
    """Re-queue (or fail, past `max_attempts`) the running jobs of workers no longer
    alive, and give their reservations back; the ids of the jobs handed on."""
    reserved = scheduler.reservations()
    running = store.running_jobs()
    holders = set(reserved.values()) | set(running.values())
    if not holders:
        return []
    # Only the workers named there matter: no scan of every worker key.
    living = alive(store.redis, holders)
    released = _release_all(
        store, scheduler, {j: w for j, w in reserved.items() if w not in living}
    )
    lost = {job_id: worker for job_id, worker in running.items() if worker not in living}
    return released + _reap_all(store, lost, max_attempts)


def reap_predecessor_jobs(
    store: JobStore, scheduler: Scheduler, worker: str, max_attempts: int
) -> list[str]:
    """Hand on the jobs the running index and the reservations still give to `worker`
    as it starts.

    The process that just took this name runs nothing yet, so these are a dead
    predecessor's under the same name (a restarted container with a fixed
    --name). Its record will look alive again from now on, so no other reaper
    would ever hand them back.
    """
    reserved = {j: w for j, w in scheduler.reservations().items() if w == worker}
    lost = {job_id: name for job_id, name in store.running_jobs().items() if name == worker}
    return _release_all(store, scheduler, reserved) + _reap_all(store, lost, max_attempts)


def _release_all(store: JobStore, scheduler: Scheduler, reserved: dict[str, str]) -> list[str]:
    released = []
    for job_id, worker in reserved.items():
        record = store.get_or_none(job_id)
        if record is None or record.status is not JobStatus.QUEUED:
            continue
        if scheduler.release(job_id, worker, record.queue):
            log.warning(
                "job %s was reserved, prepared to run next, by worker %s, which died: "
                "back to its queue",
                job_id,
                worker,
            )
            released.append(job_id)
    return released


def _reap_all(store: JobStore, lost: dict[str, str], max_attempts: int) -> list[str]:
    reaped = []
    for job_id, worker in lost.items():
        try:
            if _reap(store, job_id, worker, max_attempts):
                reaped.append(job_id)
        except (InvalidTransition, JobNotFound):
            # Another reaper got there first, or the job finished meanwhile.
            store.forget_running(job_id)
    return reaped


def _reap(store: JobStore, job_id: str, worker: str, max_attempts: int) -> bool:
    record = store.get(job_id)
    if record.status is not JobStatus.RUNNING:
        store.forget_running(job_id)
        return False
    if record.attempts >= max_attempts:
        log.error(
            "job %s lost its worker %s on attempt %d of %d: failing it",
            job_id,
            worker,
            record.attempts,
            max_attempts,
        )
        store.transition(
            job_id,
            JobStatus.FAILED,
            error=JobErrorInfo(
                type="worker_lost",
                message=(
                    f"the worker running this job died on each of {record.attempts} attempts "
                    "(out of memory, crash or preemption); not retrying"
                ),
            ),
        )
        return True
    log.warning(
        "job %s lost its worker %s (attempt %d): re-queuing it", job_id, worker, record.attempts
    )
    # Back in its key's line, first (it keeps its arrival), with a wake-up token.
    store.transition(job_id, JobStatus.QUEUED, worker=None, progress=0.0)
    return True
