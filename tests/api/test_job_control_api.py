"""Job control through the API alone (no worker): idempotency, deadlines, listing, cancel."""

from __future__ import annotations

import time

import pytest
import redis
from fastapi.testclient import TestClient

from api.job_headers import parse_duration, parse_prefer_wait
from shared.constants import broker_lists, model_queue
from shared.errors import InvalidRequest

BODY = {"prompt": "a lighthouse", "model": "tiny-sd", "seed": 1}


def queued_messages(client: redis.Redis, model: str = "tiny-sd") -> int:
    return sum(client.llen(name) for name in broker_lists(model_queue(model)))


def test_idempotent_retries_create_one_job(api: TestClient, api_redis: redis.Redis) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = api.post("/jobs", json=BODY, headers=headers)
    retry = api.post("/jobs", json=BODY, headers=headers)

    assert first.status_code == retry.status_code == 202
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert queued_messages(api_redis) == 1
    assert api.get("/jobs").json()["jobs"][0]["id"] == first.json()["id"]
    assert len(api.get("/jobs").json()["jobs"]) == 1


def test_same_idempotency_key_with_another_body_conflicts(
    api: TestClient, api_redis: redis.Redis
) -> None:
    api.post("/jobs", json=BODY, headers={"Idempotency-Key": "k1"})
    response = api.post("/jobs", json={**BODY, "seed": 2}, headers={"Idempotency-Key": "k1"})
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "idempotency_conflict"
    assert queued_messages(api_redis) == 1


def test_idempotency_keys_expire_after_a_day(api: TestClient, api_redis: redis.Redis) -> None:
    api.post("/jobs", json=BODY, headers={"Idempotency-Key": "ttl"})
    [key] = list(api_redis.scan_iter("darkroom:idempotency:*"))
    assert 23 * 3600 < api_redis.ttl(key) <= 24 * 3600


def test_a_queued_job_past_its_deadline_ends_without_running(api: TestClient) -> None:
    job = api.post("/jobs", json={**BODY, "deadline": 0.2}).json()
    assert job["deadline_at"] is not None
    time.sleep(0.3)
    current = api.get(f"/jobs/{job['id']}").json()
    assert current["status"] == "canceled"
    assert current["error"]["type"] == "deadline_exceeded"
    assert current["started_at"] is None


def test_cancel_after_header_sets_the_deadline(api: TestClient) -> None:
    job = api.post("/jobs", json=BODY, headers={"Cancel-After": "5m"}).json()
    created = job["created_at"]
    assert job["deadline_at"] > created
    bad = api.post("/jobs", json=BODY, headers={"Cancel-After": "soon"})
    assert bad.status_code == 422
    assert "Cancel-After" in bad.json()["error"]["message"]


def test_cancel_a_queued_job_then_409(api: TestClient) -> None:
    job = api.post("/jobs", json=BODY).json()
    assert job["queue_position"] == 0
    response = api.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert response.json()["queue_position"] is None
    again = api.post(f"/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert api.post("/jobs/nope/cancel").status_code == 404


def test_prefer_wait_returns_202_when_the_job_is_not_done_in_time(api: TestClient) -> None:
    started = time.monotonic()
    response = api.post("/jobs", json=BODY, headers={"Prefer": "wait=0.5"})
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert time.monotonic() - started >= 0.5
    assert api.post("/jobs", json=BODY, headers={"Prefer": "wait=abc"}).status_code == 422


def test_list_jobs_newest_first_with_cursor_and_status_filter(api: TestClient) -> None:
    ids = [api.post("/jobs", json={**BODY, "seed": i}).json()["id"] for i in range(5)]
    api.post(f"/jobs/{ids[1]}/cancel")

    first = api.get("/jobs", params={"limit": 2}).json()
    second = api.get("/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = api.get("/jobs", params={"limit": 2, "cursor": second["next_cursor"]}).json()

    listed = [j["id"] for page in (first, second, third) for j in page["jobs"]]
    assert listed == list(reversed(ids))
    assert third["next_cursor"] is None
    canceled = api.get("/jobs", params={"status": "canceled"}).json()["jobs"]
    assert [j["id"] for j in canceled] == [ids[1]]
    assert api.get("/jobs", params={"status": "bogus"}).status_code == 422


def test_high_priority_is_ahead_in_the_queue(api: TestClient, api_redis: redis.Redis) -> None:
    normal = [api.post("/jobs", json=BODY).json() for _ in range(3)]
    low = api.post("/jobs", json={**BODY, "priority": "low"}).json()
    high = api.post("/jobs", json={**BODY, "priority": "high"}).json()

    position = {
        j["id"]: api.get(f"/jobs/{j['id']}").json()["queue_position"] for j in [*normal, low, high]
    }
    assert position[high["id"]] == 0
    assert [position[j["id"]] for j in normal] == [1, 2, 3]
    assert position[low["id"]] == 4
    # One wake-up token per job, on the queue's own list (the scheduler, not
    # kombu's priority lists, decides the order: docs/scheduling.md).
    lists = broker_lists(model_queue("tiny-sd"))
    assert [api_redis.llen(name) for name in lists] == [5, 0, 0, 0]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("1m30s", 90)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "-5s", "5x"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_duration(text)


def test_parse_prefer_wait() -> None:
    assert parse_prefer_wait(None) is None
    assert parse_prefer_wait("wait") == 60
    assert parse_prefer_wait("respond-async, wait=5") == 5
    assert parse_prefer_wait("wait=600") == 60
    assert parse_prefer_wait("return=minimal") is None
