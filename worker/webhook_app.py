"""The light webhook worker: `celery -A worker.webhook_app worker` (or `darkroom webhooks`).

Consumes only the webhook queue, many deliveries at once on threads, so a slow
receiver never holds up generation. It also re-queues deliveries whose retry
time has come.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from typing import Any

from celery.exceptions import CPendingDeprecationWarning
from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown

from shared.connections import redis_client
from shared.constants import WEBHOOK_QUEUE, WEBHOOK_TASK
from shared.logs import configure_logging
from shared.queue import make_celery
from shared.settings import get_settings
from worker import metrics_server
from worker.library_logs import quiet_banner
from worker.webhook_broker import transport_path
from worker.webhook_delivery import Deliverer, pop_due_retries

log = logging.getLogger(__name__)
RETRY_POLL_S = 0.2

configure_logging(get_settings().log_level, get_settings().log_format)
app = make_celery(get_settings())
app.conf.update(
    worker_pool="threads",
    worker_concurrency=16,
    task_default_queue=WEBHOOK_QUEUE,
    # Deliveries are cheap and idempotent per webhook-id: prefetch a few.
    worker_prefetch_multiplier=4,
    # kombu's Redis transport, but one that survives a Redis restart while it
    # holds unacknowledged deliveries, and hands them back as soon as Redis is
    # up again instead of after the visibility timeout (worker.webhook_broker).
    broker_transport=transport_path(sentinel=bool(get_settings().redis_sentinels)),
    # A thread cannot be cancelled (Celery's attempt only logs a traceback per
    # delivery): one in flight when the connection drops ends by its deadline,
    # and its message was handed back all the same.
    worker_cancel_long_running_tasks_on_connection_loss=False,
)
_stop = threading.Event()


@functools.cache
def _deliverer() -> Deliverer:
    return Deliverer(redis_client(get_settings()), get_settings())


def deliver_webhook(delivery: dict[str, Any]) -> None:
    _deliverer().deliver(delivery)


app.task(name=WEBHOOK_TASK, ignore_result=True)(deliver_webhook)


def _requeue_due_retries() -> None:
    client = redis_client(get_settings())
    failing = False
    # Taken from the retry set, not yet on the queue: kept across ticks, so a
    # Redis restart between the two steps loses none.
    unsent: list[dict[str, Any]] = []
    while not _stop.wait(RETRY_POLL_S):
        try:
            unsent += pop_due_retries(client)
            while unsent:
                app.send_task(WEBHOOK_TASK, args=[unsent[0]], queue=WEBHOOK_QUEUE)
                unsent.pop(0)
        except Exception as exc:  # noqa: BLE001 -- Redis away, or anything: try again next tick
            # Once per outage, not five times a second.
            if not failing:
                log.warning("webhook retry scheduler: %s (trying again until it works)", exc)
            failing = True
        else:
            if failing:
                log.info("webhook retry scheduler: working again")
            failing = False


def _quiet_banner(instance: Any, **_: Any) -> None:
    if get_settings().log_format == "json":
        quiet_banner(instance)
    # worker_cancel_long_running_tasks_on_connection_loss is False on purpose;
    # Celery's warning about it on every connection loss (its logging setup,
    # just done, shows it always) says nothing to an operator here.
    warnings.filterwarnings(
        "ignore",
        r"\s*In Celery 5.1 we introduced an optional breaking change",
        CPendingDeprecationWarning,
    )


def _start_scheduler(**_: Any) -> None:
    port = get_settings().worker_metrics_port
    if port:
        metrics_server.serve_or_exit(port)
    threading.Thread(target=_requeue_due_retries, name="webhook-retries", daemon=True).start()


def _stop_scheduler(**_: Any) -> None:
    _stop.set()


celeryd_after_setup.connect(_quiet_banner)
worker_ready.connect(_start_scheduler)
worker_shutdown.connect(_stop_scheduler)
