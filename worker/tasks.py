"""Celery glue: the generate task and the worker's lifecycle signals. Nothing of torch here."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown

from shared.constants import GENERATE_TASK
from shared.jobs import utcnow
from shared.settings import get_settings
from worker import boot

log = logging.getLogger(__name__)

_context: boot.WorkerContext | None = None


def register(app: Celery) -> None:
    @app.task(name=GENERATE_TASK, ignore_result=True)
    def generate(job_id: str) -> None:
        if _context is None or _context.runner is None:
            # Should not happen: a worker with no model consumes no job queue.
            raise RuntimeError("this worker has no model loaded")
        heartbeat = _context.heartbeat
        runner = _context.runner
        try:
            runner.run(job_id)  # marks the worker busy once it claimed something (on_start)
        finally:
            # A dropped message (a batched companion's, a canceled job's) wrote nothing.
            if heartbeat.info.state == "busy":
                heartbeat.update(
                    state="ready", current_job=None, current_batch=[], jobs_done=runner.jobs_done
                )


@celeryd_after_setup.connect
def _load_model(sender: str, instance: Any, **_: Any) -> None:
    """Preload the model before the worker consumes anything, then subscribe to its queues."""
    global _context
    _context = boot.start_worker(sender, get_settings())
    queues = instance.app.amqp.queues
    queues.select(_context.queues)


@worker_ready.connect
def _announce_ready(**_: Any) -> None:
    if _context is not None and _context.runner is not None:
        _context.heartbeat.update(state="ready", ready_at=utcnow().isoformat())


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _context is not None:
        _context.heartbeat.stop()
