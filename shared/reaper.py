"""Give back the jobs of dead workers, and fail the jobs that keep killing them.

A worker killed mid-job (OOM kill, driver fault, preempted node) leaves its
job `running` and its Celery message unacknowledged; Redis would redeliver it
only after the visibility timeout (hours). Workers refresh a heartbeat record
instead, and whoever runs the reaper (every worker, and every API process)
re-enqueues the running jobs whose worker's record expired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import Celery

from shared.errors import InvalidTransition, JobNotFound
from shared.held import held_jobs, reap_held
from shared.jobs import JobErrorInfo, JobStatus
from shared.orphans import requeue_orphans
from shared.queue import publish_job
from shared.store import JobStore
from shared.workers import alive

log = logging.getLogger(__name__)


def reap_lost_jobs(
    store: JobStore, celery: Celery, max_attempts: int, queues: Iterable[str] = ()
) -> list[str]:
    """Re-enqueue (or fail, past `max_attempts`) running jobs of workers no longer
    alive, and give queued jobs whose message a dying worker took (held ones, and
    those of `queues` with none left) a new one."""
    held = held_jobs(store.redis)
    orphans = reap_held(store, celery, held)
    orphans += requeue_orphans(store, celery, queues, skip=set(held))
    running = store.running_jobs()
    if not running:
        return orphans
    # Only the workers named in the running index matter: no scan of every worker key.
    living = alive(store.redis, set(running.values()))
    lost = {job_id: worker for job_id, worker in running.items() if worker not in living}
    return orphans + _reap_all(store, celery, lost, max_attempts)


def reap_predecessor_jobs(
    store: JobStore, celery: Celery, worker: str, max_attempts: int
) -> list[str]:
    """Re-enqueue the jobs the running index still gives to `worker` as it starts.

    The process that just took this name runs nothing yet, so these are a dead
    predecessor's under the same name (a restarted container with a fixed
    --name). Its record will look alive again from now on, so no other reaper
    would ever hand them back.
    """
    lost = {job_id: name for job_id, name in store.running_jobs().items() if name == worker}
    return _reap_all(store, celery, lost, max_attempts)


def _reap_all(
    store: JobStore, celery: Celery, lost: dict[str, str], max_attempts: int
) -> list[str]:
    reaped = []
    for job_id, worker in lost.items():
        try:
            if _reap(store, celery, job_id, worker, max_attempts):
                reaped.append(job_id)
        except (InvalidTransition, JobNotFound):
            # Another reaper got there first, or the job finished meanwhile.
            store.forget_running(job_id)
    return reaped


def _reap(store: JobStore, celery: Celery, job_id: str, worker: str, max_attempts: int) -> bool:
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
    store.transition(job_id, JobStatus.QUEUED, worker=None, progress=0.0)
    publish_job(celery, job_id, record.queue, record.priority)
    return True
