"""The Celery app both sides share: broker settings and how a job is published.

The API publishes by task name, so it never imports the worker (or torch).
It builds a job's message itself (job_message) and pushes it in the same
Redis script that stores the job: Celery's send_task would cost a producer,
a broker connection checkout and a round trip of its own per job.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

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
    app = Celery("darkroom", broker=broker_url(settings))
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
            **_sentinel_transport_options(settings),
        },
    )
    return app


def broker_url(settings: Settings) -> str:
    """REDIS_URL, or under Sentinel kombu's `sentinel://` list of the sentinels
    with REDIS_URL's credentials and database (the master's)."""
    if not settings.redis_sentinels:
        return settings.redis_url
    url = urlparse(settings.redis_url)
    credentials = url.netloc.rpartition("@")[0]
    login = f"{credentials}@" if credentials else ""
    database = url.path if url.path not in {"", "/"} else "/0"
    return ";".join(
        f"sentinel://{login}{f'[{host}]' if ':' in host else host}:{port}{database}"
        for host, port in settings.sentinel_addresses
    )


def _sentinel_transport_options(settings: Settings) -> dict[str, Any]:
    if not settings.redis_sentinels:
        return {}
    options: dict[str, Any] = {"master_name": settings.redis_sentinel_master}
    if settings.redis_sentinel_password is not None:
        options["sentinel_kwargs"] = {
            "password": settings.redis_sentinel_password.get_secret_value()
        }
    return options


@dataclass(frozen=True)
class BrokerMessage:
    # The Redis list kombu's consumers pop for the queue and priority (LPUSH onto it).
    list_name: str
    payload: bytes


# Celery puts its app's id here, for result replies; darkroom ignores results.
_REPLY_TO = str(uuid.uuid4())


def job_message(job_id: str, queue: str, priority: str = "normal") -> BrokerMessage:
    """The message Celery's send_task(GENERATE_TASK, args=[job_id]) puts on Redis.

    Task protocol 2 in kombu's Redis envelope: the body (args, kwargs, embed) as
    base64 JSON, Celery's headers, and properties with the delivery info and the
    priority, which picks the list (kombu keeps one per priority step).
    tests/shared/test_queue.py holds it to what Celery itself sends.
    """
    task_id = str(uuid.uuid4())
    args = [job_id]
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = base64.b64encode(json.dumps([args, {}, embed]).encode()).decode()
    level = PRIORITIES[priority]
    message = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": _headers(task_id, args),
        "properties": {
            "correlation_id": task_id,
            "reply_to": _REPLY_TO,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": level,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return BrokerMessage(_list_name(queue, level), json.dumps(message).encode())


def token_message(queue: str, job_id: str = "") -> BrokerMessage:
    """A wake-up token for `queue`: the message a worker's task is handed when it
    is idle, meaning "there is work in this queue" (the scheduler picks which job:
    docs/scheduling.md). Always on the queue's own list (kombu's priority step 0),
    so one list per queue counts them; `job_id` only says which job sent it."""
    return job_message(job_id, queue, "high")


def _headers(task_id: str, args: list[str]) -> dict[str, object]:
    return {
        "lang": "py",
        "task": GENERATE_TASK,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        # Which process sent it, named as Celery names a process that is no worker.
        "origin": f"gen{os.getpid()}@{socket.gethostname()}",
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }


def _list_name(queue: str, level: int) -> str:
    # kombu's _q_for_pri: the queue's own name for step 0, "<queue>:<step>" after.
    return queue if level == 0 else f"{queue}{PRIORITY_SEPARATOR}{level}"
