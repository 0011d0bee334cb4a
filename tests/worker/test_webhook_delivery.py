"""Single delivery attempts: signatures, rotation, redirects, Retry-After, the address guard,
the attempt's deadline and the per-key limit."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from standardwebhooks import Webhook

from shared.constants import JOB_KEY_PREFIX, WEBHOOK_RETRY_KEY
from shared.settings import Settings
from shared.webhooks import log_key, signature_header
from tests.support.polling import wait_until
from tests.support.receiver import Receiver, Script
from tests.support.stalling_receivers import TrickleReceiver
from worker.webhook_delivery import Deliverer, pop_due_retries
from worker.webhook_http import post
from worker.webhook_leases import KeyLeases

# Real receivers, retries and deadlines in real time.
pytestmark = pytest.mark.slow

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


def delivery(url: str, attempt: int = 1, owner: str = "tenant-a", job_id: str = "j1") -> dict:
    body = json.dumps({"type": "job.completed", "data": {"id": job_id}})
    return {
        "event_id": f"msg_{job_id}",
        "event": "job.completed",
        "job_id": job_id,
        "owner": owner,
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
    assert call.headers["webhook-id"] == "msg_j1"


def test_redirects_are_not_followed(deliverer: Deliverer, receiver: Receiver) -> None:
    target = receiver.url("/target")
    url = receiver.url("/moved", Script(statuses=[302], headers={"Location": target}))
    assert deliverer.deliver(delivery(url)) == "retrying"
    assert receiver.at("/target") == []


def _when_due(client: redis.Redis, timeout_s: float = 30) -> list[dict[str, Any]]:
    return wait_until(lambda: pop_due_retries(client), timeout_s, what="the retry coming due")


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


@pytest.fixture
def trickle() -> Iterator[TrickleReceiver]:
    server = TrickleReceiver(interval_s=0.2)
    yield server
    server.stop()


def test_a_trickled_answer_ends_at_the_deadline(
    make_settings: Callable[..., Settings], api_redis: redis.Redis, trickle: TrickleReceiver
) -> None:
    """Each byte comes well inside the timeout; the attempt as a whole still ends."""
    settings = make_settings(
        webhook_allow_private_networks=True, webhook_timeout_s=1, webhook_retry_delays_s=[60]
    )
    assert Deliverer(api_redis, settings).deliver(delivery(trickle.base_url + "/t")) == "retrying"
    [attempt] = [json.loads(item) for item in api_redis.lrange(log_key("j1"), 0, -1)]
    assert attempt["outcome"] == "retrying"
    assert attempt["status_code"] == 200  # the status line came; the answer never finished
    assert attempt["error"] == "deadline passed: no complete answer within 1 s"


def test_a_key_over_its_limit_waits_without_an_attempt(
    make_settings: Callable[..., Settings], api_redis: redis.Redis, receiver: Receiver
) -> None:
    settings = make_settings(webhook_allow_private_networks=True, webhook_max_per_key=1)
    deliverer = Deliverer(api_redis, settings)
    with deliverer.leases.hold("tenant-a") as running:  # tenant A's one slot, taken
        assert running
        assert deliverer.deliver(delivery(receiver.url("/a"), attempt=2)) == "deferred"
        # Another key is not held up by it.
        b = delivery(receiver.url("/b"), owner="tenant-b", job_id="j2")
        assert deliverer.deliver(b) == "delivered"
    [(member, _)] = api_redis.zrange(WEBHOOK_RETRY_KEY, 0, -1, withscores=True)
    assert json.loads(member)["attempt"] == 2  # a deferral is no attempt
    assert receiver.at("/a") == []
    assert api_redis.llen(log_key("j1")) == 0
    [retry] = _when_due(api_redis)
    assert deliverer.deliver(retry) == "delivered"
    [attempt] = [json.loads(item) for item in api_redis.lrange(log_key("j1"), 0, -1)]
    assert (attempt["attempt"], attempt["outcome"]) == (2, "delivered")


def test_a_lease_whose_holder_died_expires(api_redis: redis.Redis) -> None:
    leases = KeyLeases(api_redis, limit=1, lifetime_s=0.3)
    held = leases.hold("tenant-a")
    assert held.__enter__()  # and never left: the delivery thread died
    with leases.hold("tenant-a") as running:
        assert not running
    wait_until(lambda: _free(leases, "tenant-a"), timeout_s=10, what="the lease to expire")


def _free(leases: KeyLeases, owner: str) -> bool:
    with leases.hold(owner) as running:
        return running


def test_an_event_delivered_already_is_not_sent_again(
    deliverer: Deliverer, receiver: Receiver
) -> None:
    """A message handed out twice (restored after a broker restart while its
    first copy was being delivered) does not call the receiver twice."""
    event = delivery(receiver.url("/once"))
    assert deliverer.deliver(event) == "delivered"
    assert deliverer.deliver(event) == "duplicate"
    assert len(receiver.at("/once")) == 1


def test_a_progress_event_of_a_job_that_ended_since_is_dropped(
    deliverer: Deliverer, receiver: Receiver, api_redis: redis.Redis
) -> None:
    """A progress delivery that waited (its key's allowance, a retry) while the job
    finished would reach the receiver after the final event: it is not sent."""
    progress = {**delivery(receiver.url("/late"), job_id="j9"), "event": "job.progress"}
    api_redis.hset(JOB_KEY_PREFIX + "j9", "status", json.dumps("running"))
    assert deliverer.deliver({**progress, "event_id": "msg_p1"}) == "delivered"
    api_redis.hset(JOB_KEY_PREFIX + "j9", "status", json.dumps("succeeded"))
    assert deliverer.deliver({**progress, "event_id": "msg_p2"}) == "stale"
    assert deliverer.deliver(delivery(receiver.url("/late"), job_id="j9")) == "delivered"
    assert len(receiver.at("/late")) == 2
