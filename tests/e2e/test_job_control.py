"""Job control against real workers: progress, queue position, cancel, priority, waiting, SSE."""

from __future__ import annotations

import functools
import json
import time
import uuid
from datetime import datetime

import redis
from fastapi.testclient import TestClient

from tests.e2e.helpers import submit, wait_for
from tests.support.pipelines import steps_key
from tests.support.polling import wait_until

# Steps of the slow jobs take 0.2 s: poll finer than that.
_wait_until = functools.partial(wait_until, timeout_s=30, interval_s=0.02)

FLAKY = "tiny-flaky"


def _slow_prompt() -> str:
    return f"slow {uuid.uuid4().hex[:8]}"


def test_progress_rises_monotonically_to_one(client: TestClient) -> None:
    job = submit(client, prompt=_slow_prompt(), model=FLAKY, steps=8)
    seen = []
    while True:
        current = client.get(f"/jobs/{job['id']}").json()
        seen.append(current["progress"])
        if current["status"] in {"succeeded", "failed", "canceled"}:
            break
        time.sleep(0.03)
    assert current["status"] == "succeeded"
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert len({p for p in seen if 0 < p < 1}) >= 2  # it moved with the steps
    assert current["timings"]["running_s"] >= 8 * 0.2 * 0.9


def test_queue_position_counts_down(client: TestClient) -> None:
    busy = submit(client, prompt=_slow_prompt(), model=FLAKY, steps=5)
    _wait_until(lambda: client.get(f"/jobs/{busy['id']}").json()["status"] == "running")
    waiting = [submit(client, prompt=_slow_prompt(), model=FLAKY, steps=2) for _ in range(3)]

    positions = [client.get(f"/jobs/{j['id']}").json()["queue_position"] for j in waiting]
    assert positions == [0, 1, 2]

    _wait_until(lambda: client.get(f"/jobs/{waiting[0]['id']}").json()["status"] != "queued")
    assert client.get(f"/jobs/{waiting[2]['id']}").json()["queue_position"] == 1
    for job in [busy, *waiting]:
        done = wait_for(client, job["id"])
        assert done["queue_position"] is None
        assert done["timings"]["queued_s"] is not None


def test_running_job_canceled_stops_within_a_step_and_next_job_runs(
    client: TestClient, e2e_redis_url: str
) -> None:
    steps = redis.Redis.from_url(e2e_redis_url)
    prompt = _slow_prompt()
    job = submit(client, prompt=prompt, model=FLAKY, steps=40)
    following = submit(client, prompt="after the cancel", model=FLAKY)
    _wait_until(lambda: steps.llen(steps_key(prompt)) >= 2)

    response = client.post(f"/jobs/{job['id']}/cancel")
    ran_before_cancel = steps.llen(steps_key(prompt))

    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    canceled = wait_for(client, job["id"])
    assert canceled["status"] == "canceled"
    assert canceled["images"] == []
    # The step in flight when the cancel arrived finishes; no other step runs.
    assert steps.llen(steps_key(prompt)) <= ran_before_cancel + 1
    assert wait_for(client, following["id"])["status"] == "succeeded"
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 409


def test_queued_job_canceled_never_runs(client: TestClient) -> None:
    busy = submit(client, prompt=_slow_prompt(), model=FLAKY, steps=5)
    queued = submit(client, prompt="never runs", model=FLAKY)

    response = client.post(f"/jobs/{queued['id']}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    # A job queued after it finishing on the same one-at-a-time worker means the
    # canceled job's message reached that worker before.
    later = submit(client, prompt="after the canceled one", model=FLAKY)
    assert wait_for(client, later["id"])["status"] == "succeeded"
    assert wait_for(client, busy["id"])["status"] == "succeeded"
    final = client.get(f"/jobs/{queued['id']}").json()
    assert final["status"] == "canceled"
    assert final["started_at"] is None
    assert final["attempts"] == 0


def test_deadline_cancels_a_running_job(client: TestClient) -> None:
    job = submit(client, prompt=_slow_prompt(), model=FLAKY, steps=40, deadline=1.0)
    done = wait_for(client, job["id"])
    assert done["status"] == "canceled"
    assert done["error"]["type"] == "deadline_exceeded"


def test_high_priority_job_runs_before_ten_normal_ones(client: TestClient) -> None:
    busy = submit(client, prompt=_slow_prompt(), model=FLAKY, steps=5)
    _wait_until(lambda: client.get(f"/jobs/{busy['id']}").json()["status"] == "running")
    normal = [submit(client, prompt=f"normal {i}", model=FLAKY) for i in range(10)]
    high = submit(client, prompt="urgent", model=FLAKY, priority="high")

    assert client.get(f"/jobs/{high['id']}").json()["queue_position"] == 0
    high_done = wait_for(client, high["id"])
    normal_done = [wait_for(client, job["id"]) for job in normal]

    high_start = datetime.fromisoformat(high_done["started_at"])
    assert all(high_start < datetime.fromisoformat(j["started_at"]) for j in normal_done)


def test_prefer_wait_returns_a_finished_job_in_one_request(client: TestClient) -> None:
    response = client.post(
        "/jobs", json={"prompt": "wait for me", "model": "tiny-sd"}, headers={"Prefer": "wait"}
    )
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"
    assert response.json()["images"]


def test_sse_streams_status_and_ends_with_the_terminal_event(client: TestClient) -> None:
    job = submit(client, prompt=_slow_prompt(), model=FLAKY, steps=6)
    events = []
    with client.stream("GET", f"/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((event, json.loads(line.removeprefix("data: "))))
    kinds = [kind for kind, _ in events]
    statuses = [data["status"] for kind, data in events if kind == "status"]
    assert statuses[-1] == "succeeded"
    assert "running" in statuses
    assert "progress" in kinds
    assert events[-1][0] == "status"
    assert events[-1][1]["progress"] == 1.0
