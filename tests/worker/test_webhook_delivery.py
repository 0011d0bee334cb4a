"""Single delivery attempts: signatures, rotation, redirects, Retry-After, the address guard."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from standardwebhooks import Webhook

from shared.constants import WEBHOOK_RETRY_KEY
from shared.settings import Settings
from shared.webhooks import signature_header
from tests.support.receiver import Receiver, Script
from worker.webhook_delivery import Deliverer, pop_due_retries, post

OLD = "whsec_" + base64.b64encode(b"old-secret-old-secret-old-secret").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-new-secret-new-secret").decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def deliverer(make_settings: Callable[..., Settings], api_redis: redis.Redis) -> Deliverer:
    settings = make_settings(
        webhook_secret=f"{NEW} {OLD}",
        webhook_allow_private_networks=True,
        webhook_retry_delays_s=[0.5],
    )
    return Deliverer(api_redis, settings)


def delivery(url: str, attempt: int = 1) -> dict:
    body = json.dumps({"type": "job.completed", "data": {"id": "j1"}})
    return {
        "event_id": "msg_1",
        "event": "job.completed",
        "job_id": "j1",
        "url": url,
        "body": body,
        "attempt": attempt,
    }


def test_during_rotation_both_secrets_sign() -> None:
    header = signature_header([NEW, OLD], "msg_1", int(time.time()), '{"a":1}')
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": header,
    }
    for secret in (NEW, OLD):
        assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}
    assert len(header.split()) == 2


def test_delivery_is_signed_and_recorded(deliverer: Deliverer, receiver: Receiver) -> None:
    assert deliverer.deliver(delivery(receiver.url("/ok"))) == "delivered"
    [call] = receiver.at("/ok")
    assert Webhook(OLD).verify(call.body, call.headers)["type"] == "job.completed"
    assert call.headers["webhook-id"] == "msg_1"


def test_redirects_are_not_followed(deliverer: Deliverer, receiver: Receiver) -> None:
    target = receiver.url("/target")
    url = receiver.url("/moved", Script(statuses=[302], headers={"Location": target}))
    assert deliverer.deliver(delivery(url)) == "retrying"
    assert receiver.at("/target") == []


def _when_due(client: redis.Redis, timeout_s: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while not (due := pop_due_retries(client)):
        assert time.monotonic() < deadline, "the retry never came due"
        time.sleep(0.05)
    return due


def test_retry_after_is_honoured(
    deliverer: Deliverer, receiver: Receiver, api_redis: redis.Redis
) -> None:
    url = receiver.url("/busy", Script(statuses=[503], headers={"Retry-After": "30"}))
    before = time.time()
    assert deliverer.deliver(delivery(url)) == "retrying"
    [(member, due)] = api_redis.zrange(WEBHOOK_RETRY_KEY, 0, -1, withscores=True)
    assert due >= before + 30
    assert json.loads(member)["attempt"] == 2
    assert pop_due_retries(api_redis) == []  # not due yet


def test_after_the_last_retry_the_delivery_fails(
    deliverer: Deliverer, receiver: Receiver, api_redis: redis.Redis
) -> None:
    url = receiver.url("/down", Script(statuses=[500]))
    assert deliverer.deliver(delivery(url)) == "retrying"
    [retry] = _when_due(api_redis)
    assert deliverer.deliver(retry) == "failed"
    assert api_redis.zcard(WEBHOOK_RETRY_KEY) == 0


def test_delivery_time_guard_refuses_loopback_without_the_setting(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    settings = make_settings(webhook_allow_private_networks=False)
    response = post(receiver.url("/ok"), b"{}", {"content-type": "application/json"}, settings)
    assert response.status_code is None
    assert response.permanent
    assert "non-public" in (response.error or "")
    assert receiver.at("/ok") == []


def test_unreachable_receiver_is_retried(deliverer: Deliverer) -> None:
    assert deliverer.deliver(delivery("http://127.0.0.1:9/closed")) == "retrying"
