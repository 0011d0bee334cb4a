"""Webhooks end to end: real receiver, real webhook worker, verified with `standardwebhooks`."""

from __future__ import annotations

import itertools
import json
from datetime import datetime

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from tests.e2e.helpers import submit, wait_for
from tests.support.e2e_fixtures import WEBHOOK_SECRET
from tests.support.polling import wait_until
from tests.support.receiver import Receiver, Script

pytestmark = pytest.mark.usefixtures("webhook_worker")


def _verified(call) -> dict:  # type: ignore[no-untyped-def]
    """Verify a received call with the standardwebhooks package; return its payload."""
    return Webhook(WEBHOOK_SECRET).verify(call.body, call.headers)  # type: ignore[no-any-return]


def _job_when(client: TestClient, job_id: str, predicate, timeout_s: float = 60) -> dict:  # type: ignore[no-untyped-def]
    def matching() -> dict | None:
        job = client.get(f"/jobs/{job_id}").json()
        return job if predicate(job) else None

    return wait_until(
        matching, timeout_s, what=lambda: f"job {job_id} ({client.get(f'/jobs/{job_id}').json()})"
    )


def _a_later_retried_delivery(client: TestClient, receiver: Receiver, path: str) -> None:
    """Wait for a positive signal that comes after anything the previous job could still send.

    A later job on the same (solo, one job at a time) tiny-sd worker publishes its
    events after every event of the jobs before it, and its first delivery fails
    once, so its retry waits the same delay as any retry scheduled before it.
    Once that retry arrived, an earlier job's late event or retry would have too.
    """
    url = receiver.url(path, Script(statuses=[500, 200]))
    submit(client, prompt="a later job", model="tiny-sd", webhook=url)
    receiver.wait_for(path, 2)


def test_receiver_gets_the_events_it_asked_for_signed(
    client: TestClient, receiver: Receiver
) -> None:
    url = receiver.url("/all")
    job = submit(
        client,
        prompt="slow webhook events",
        model="tiny-flaky",
        steps=8,
        webhook=url,
        webhook_events_filter=["start", "progress", "completed"],
    )
    wait_for(client, job["id"])
    calls = receiver.wait_for("/all", 3)
    _job_when(
        client,
        job["id"],
        lambda j: (
            j["webhook"]["state"] == "delivered"
            and len(j["webhook"]["attempts"]) == len(receiver.at("/all"))
        ),
    )

    payloads = [_verified(call) for call in receiver.at("/all")]
    types = [p["type"] for p in payloads]
    assert types[0] == "job.started"
    assert types[-1] == "job.completed"
    assert "job.progress" in types
    progress_times = [
        datetime.fromisoformat(p["timestamp"]) for p in payloads if p["type"] == "job.progress"
    ]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(progress_times)]
    assert all(gap >= 0.9 for gap in gaps)  # at most one progress call per second
    final = payloads[-1]["data"]
    assert final["id"] == job["id"]
    assert final["status"] == "succeeded"
    assert final["images"]
    assert final["images"][0]["url"].startswith("http")
    assert len({c.headers["webhook-id"] for c in calls}) == len(calls)


def test_default_filter_sends_only_completed(client: TestClient, receiver: Receiver) -> None:
    job = submit(client, prompt="default filter", model="tiny-sd", webhook=receiver.url("/done"))
    assert job["webhook_events_filter"] == ["completed"]
    [call] = receiver.wait_for("/done", 1)
    payload = _verified(call)
    assert payload["type"] == "job.completed"
    assert payload["data"]["status"] == "succeeded"
    _a_later_retried_delivery(client, receiver, "/done-later")
    assert len(receiver.at("/done")) == 1


def test_failed_twice_then_ok_is_retried_with_the_same_id(
    client: TestClient, receiver: Receiver
) -> None:
    url = receiver.url("/flaky", Script(statuses=[500, 503, 200]))
    job = submit(client, prompt="flaky receiver", model="tiny-sd", webhook=url)

    calls = receiver.wait_for("/flaky", 3)
    done = _job_when(client, job["id"], lambda j: len(j["webhook"]["attempts"]) == 3)

    assert {c.headers["webhook-id"] for c in calls} == {calls[0].headers["webhook-id"]}
    for call in calls:
        _verified(call)
    assert done["status"] == "succeeded"
    attempts = done["webhook"]["attempts"]
    assert [a["status_code"] for a in attempts] == [500, 503, 200]
    assert [a["outcome"] for a in attempts] == ["retrying", "retrying", "delivered"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert done["webhook"]["state"] == "delivered"


def test_410_stops_retries(client: TestClient, receiver: Receiver) -> None:
    url = receiver.url("/gone", Script(statuses=[410]))
    job = submit(
        client,
        prompt="gone",
        model="tiny-sd",
        webhook=url,
        webhook_events_filter=["start", "completed"],
    )
    receiver.wait_for("/gone", 1)
    done = _job_when(
        client, job["id"], lambda j: j["status"] == "succeeded" and j["webhook"]["attempts"]
    )
    _a_later_retried_delivery(client, receiver, "/gone-later")

    assert len(receiver.at("/gone")) == 1  # nor was job.completed sent after the 410
    assert done["webhook"]["attempts"][0]["outcome"] == "gone"
    assert client.get(f"/jobs/{job['id']}").json()["webhook"]["state"] == "gone"


def test_exhausted_retries_are_marked_failed(client: TestClient, receiver: Receiver) -> None:
    url = receiver.url("/down", Script(statuses=[500]))
    job = submit(client, prompt="down", model="tiny-sd", webhook=url)
    done = _job_when(client, job["id"], lambda j: j["webhook"]["state"] == "failed")
    assert done["status"] == "succeeded"  # the job itself is unaffected
    assert [a["outcome"] for a in done["webhook"]["attempts"]] == ["retrying"] * 3 + ["failed"]


def test_a_slow_receiver_never_delays_the_next_generation_job(
    client: TestClient, receiver: Receiver
) -> None:
    slow = receiver.url("/slow", Script(delay_s=3.0))
    first = submit(client, prompt="slow receiver", model="tiny-sd", webhook=slow)
    wait_for(client, first["id"])
    second = submit(client, prompt="next job", model="tiny-sd")
    finished = wait_for(client, second["id"])

    [call] = receiver.wait_for("/slow", 1, timeout_s=20)
    assert finished["status"] == "succeeded"
    assert datetime.fromisoformat(finished["finished_at"]).timestamp() < call.answered_at
    assert json.loads(call.body)["data"]["id"] == first["id"]
