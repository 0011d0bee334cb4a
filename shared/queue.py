"""The Celery app both sides share: broker settings and how a job is published.

The API publishes by task name, so it never imports the worker (or torch).
"""

from __future__ import annotations

from celery import Celery

from shared.constants import (
    DEFAULT_QUEUE,
    GENERATE_TASK,
    PRIORITIES,
    PRIORITY_SEPARATOR,
    PRIORITY_STEPS,
)
from shared.settings import Settings

# Redis redelivers an unacknowledged message after this long. It must exceed
# the longest job, or a slow job is handed to a second worker mid-run.
VISIBILITY_TIMEOUT_S = 2 * 3600


def make_celery(settings: Settings) -> Celery:
    app = Celery("darkroom", broker=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=DEFAULT_QUEUE,
        task_create_missing_queues=True,
        # A job is acknowledged only once it finished; a worker lost mid-job
        # leaves it on the broker instead of dropping it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # One process per GPU that holds the model itself: no pool children,
        # so the model is loaded once and CUDA is never touched across a fork.
        worker_pool="solo",
        worker_concurrency=1,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "priority_steps": PRIORITY_STEPS,
            "sep": PRIORITY_SEPARATOR,
        },
    )
    return app


def publish_job(app: Celery, job_id: str, queue: str, priority: str = "normal") -> None:
    """Send the job to its queue; the message carries only the id."""
    app.send_task(
        GENERATE_TASK, args=[job_id], queue=queue, priority=PRIORITIES[priority], retry=False
    )
