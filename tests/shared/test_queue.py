"""The job message the API pushes itself is the one Celery's send_task puts on Redis.

The API builds a job's message (shared.queue.job_message) and pushes it in the
script that stores the job; the workers are Celery workers that must take it for
one of Celery's own. Here Celery publishes the same task and arguments into the
test Redis, and the two messages must agree in everything but their fresh ids.
The end-to-end tests (tests/e2e) have real workers run jobs sent this way.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from shared.constants import GENERATE_TASK, PRIORITIES, broker_lists, model_queue
from shared.queue import broker_url, job_message, make_celery, token_message
from shared.settings import Settings

QUEUE = model_queue("tiny-sd")


def celery_sent(client: redis.Redis, settings: Settings, priority: str) -> tuple[str, Any]:
    """The list Celery's send_task pushed onto, and the message it pushed."""
    celery = make_celery(settings)
    try:
        celery.send_task(
            GENERATE_TASK, args=["job-1"], queue=QUEUE, priority=PRIORITIES[priority], retry=False
        )
    finally:
        celery.close()
    [(name, raw)] = [
        (name, raw) for name in broker_lists(QUEUE) for raw in client.lrange(name, 0, -1)
    ]
    return name, json.loads(raw)


def ids_of(message: dict[str, Any]) -> dict[str, str]:
    """Take out what is new in every message (the task's id and the delivery tag), and
    where Celery names its app and process (the reply address, the sender)."""
    headers, properties = message["headers"], message["properties"]
    return {
        "id": headers.pop("id"),
        "root_id": headers.pop("root_id"),
        "correlation_id": properties.pop("correlation_id"),
        "delivery_tag": properties.pop("delivery_tag"),
        "reply_to": properties.pop("reply_to"),
    }


@pytest.mark.parametrize("priority", ["high", "normal", "low"])
def test_the_message_is_the_one_celery_sends(
    api_redis: redis.Redis, make_settings: Callable[..., Settings], priority: str
) -> None:
    celery_list, theirs = celery_sent(api_redis, make_settings(), priority)
    ours_raw = job_message("job-1", QUEUE, priority)
    ours = json.loads(ours_raw.payload)

    assert ours_raw.list_name == celery_list
    their_ids, our_ids = ids_of(theirs), ids_of(ours)
    assert ours == theirs
    # One task id, three places, as Celery does it; uuids all.
    assert our_ids["id"] == our_ids["root_id"] == our_ids["correlation_id"]
    for value in our_ids.values():
        uuid.UUID(value)
    assert their_ids["id"] != our_ids["id"]


def test_the_message_carries_the_task_and_the_job_id() -> None:
    message = json.loads(job_message("abc123", QUEUE, "normal").payload)
    assert message["headers"]["task"] == GENERATE_TASK
    args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == (["abc123"], {})
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": QUEUE}


def test_each_message_has_its_own_ids() -> None:
    first = json.loads(job_message("abc123", QUEUE).payload)
    second = json.loads(job_message("abc123", QUEUE).payload)
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def test_under_sentinel_the_broker_is_found_through_the_sentinels() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url="redis://:s3cret@ignored-host:6379/4",
        redis_sentinels="s-1:26379,s-2:26379",
        redis_sentinel_master="darkroom",
        redis_sentinel_password="sentinel-pw",
    )
    assert broker_url(settings) == ("sentinel://:s3cret@s-1:26379/4;sentinel://:s3cret@s-2:26379/4")
    options = make_celery(settings).conf.broker_transport_options
    assert options["master_name"] == "darkroom"
    assert options["sentinel_kwargs"] == {"password": "sentinel-pw"}
    assert broker_url(Settings(_env_file=None)) == "redis://127.0.0.1:6379/0"  # type: ignore[call-arg]


def test_a_wake_up_token_is_a_job_message_on_the_queues_own_list() -> None:
    """Tokens (docs/scheduling.md) go where a queue's depth is one list long."""
    token = token_message(QUEUE, "abc123")
    assert token.list_name == QUEUE
    message = json.loads(token.payload)
    assert message["headers"]["task"] == GENERATE_TASK
    assert message["properties"]["delivery_info"]["routing_key"] == QUEUE
