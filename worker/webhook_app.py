"""The light webhook worker: `celery -A worker.webhook_app worker` (or `darkroom webhooks`).

Consumes only the webhook queue, many deliveries at once on threads, so a slow
receiver never holds up generation. It also re-queues deliveries whose retry
time has come.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown

from shared.connections import redis_client
from shared.constants import WEBHOOK_QUEUE, WEBHOOK_TASK
from shared.logs import configure_logging
from shared.queue import make_celery
from shared.settings import get_settings
from worker import metrics_server
from worker.library_logs import quiet_banner
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
    while not _stop.wait(RETRY_POLL_S):
        try:
            for delivery in pop_due_retries(client):
                app.send_task(WEBHOOK_TASK, args=[delivery], queue=WEBHOOK_QUEUE)
        except Exception as exc:  # noqa: BLE001 -- Redis away, or anything: try again next tick
            log.warning("webhook retry scheduler: %s", exc)


def _quiet_banner(instance: Any, **_: Any) -> None:
    if get_settings().log_format == "json":
        quiet_banner(instance)


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
