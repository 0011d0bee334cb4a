"""Per-key rate limits in Redis: 429 with Retry-After, per key, sliding, replays free."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from api import ratelimit
from api.main import create_app
from shared.apikeys import ANONYMOUS, hash_key, owner_id
from shared.constants import broker_lists, model_queue
from shared.errors import RateLimited
from shared.settings import Settings

KEY_A = "key-a-0123456789abcdefghij"
KEY_B = "key-b-0123456789abcdefghij"
OWNER_A = owner_id(hash_key(KEY_A))
BODY = {"prompt": "a lighthouse", "model": "tiny-sd"}


def bearer(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **extra}


def queued(client: redis.Redis) -> int:
    return sum(client.llen(name) for name in broker_lists(model_queue("tiny-sd")))


@pytest.fixture
def limited(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> Iterator[Callable[..., TestClient]]:
    """An API with keys A and B and the given limits (both off unless given)."""
    clients: list[TestClient] = []

    def start(per_minute: int = 0, max_queued: int = 0) -> TestClient:
        settings = make_settings(
            api_keys=f"{KEY_A},{KEY_B}",
            rate_limit_submits_per_minute=per_minute,
            rate_limit_max_queued=max_queued,
        )
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def post(client: TestClient, key: str = KEY_A, **headers: str) -> httpx.Response:
    return client.post("/jobs", json=BODY, headers=bearer(key, **headers))


# --- submissions per minute -----------------------------------------------------------------


def test_submissions_over_the_per_minute_limit_are_429(
    limited: Callable[..., TestClient], api_redis: redis.Redis
) -> None:
    client = limited(per_minute=3)
    assert [post(client).status_code for _ in range(3)] == [202] * 3
    response = client.post("/jobs", json=BODY, headers=bearer(KEY_A))
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    error = response.json()["error"]
    assert error["type"] == "rate_limited"
    assert "RATE_LIMIT_SUBMITS_PER_MINUTE" in error["message"]
    assert "3 jobs per minute" in error["message"]
    detail = response.json()["detail"]
    assert detail["limit"] == "RATE_LIMIT_SUBMITS_PER_MINUTE"
    assert detail["max"] == 3
    assert detail["retry_after_s"] == int(response.headers["Retry-After"])
    # Nothing of the refused job was stored or queued.
    assert queued(api_redis) == 3
    assert len(client.get("/jobs", headers=bearer(KEY_A)).json()["jobs"]) == 3


def test_the_limit_is_per_key(limited: Callable[..., TestClient]) -> None:
    client = limited(per_minute=2)
    for _ in range(2):
        post(client, KEY_A)
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 429
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_B)).status_code == 202


def test_the_window_slides(limited: Callable[..., TestClient], api_redis: redis.Redis) -> None:
    client = limited(per_minute=2)
    post(client)
    post(client)
    log_key = ratelimit.submits_key(OWNER_A)
    (oldest, score), _ = api_redis.zrange(log_key, 0, -1, withscores=True)
    # The oldest submission was 50 s ago: its slot frees in about 10 s.
    api_redis.zadd(log_key, {oldest: score - 50_000})
    response = client.post("/jobs", json=BODY, headers=bearer(KEY_A))
    assert response.status_code == 429
    assert 9 <= int(response.headers["Retry-After"]) <= 11
    # ... and once it is over a minute old, a new job is accepted, but only one.
    api_redis.zadd(log_key, {oldest: score - 61_000})
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 202
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 429
    assert 0 < api_redis.pttl(log_key) <= 60_000


def test_idempotent_replays_are_not_counted(
    limited: Callable[..., TestClient], api_redis: redis.Redis
) -> None:
    client = limited(per_minute=2, max_queued=2)
    first = client.post("/jobs", json=BODY, headers=bearer(KEY_A, **{"Idempotency-Key": "k1"}))
    for _ in range(5):
        replay = client.post("/jobs", json=BODY, headers=bearer(KEY_A, **{"Idempotency-Key": "k1"}))
        assert replay.status_code == 202
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["id"] == first.json()["id"]
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 202
    # Now at both limits: new jobs are refused, replays still answered.
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 429
    replay = client.post("/jobs", json=BODY, headers=bearer(KEY_A, **{"Idempotency-Key": "k1"}))
    assert replay.status_code == 202
    assert queued(api_redis) == 2


def test_a_refused_requests_idempotency_key_can_be_retried(
    limited: Callable[..., TestClient], api_redis: redis.Redis
) -> None:
    client = limited(per_minute=1)
    post(client)
    refused = client.post("/jobs", json=BODY, headers=bearer(KEY_A, **{"Idempotency-Key": "k2"}))
    assert refused.status_code == 429
    api_redis.delete(ratelimit.submits_key(OWNER_A))  # a minute later
    retry = client.post("/jobs", json=BODY, headers=bearer(KEY_A, **{"Idempotency-Key": "k2"}))
    assert retry.status_code == 202
    assert "Idempotent-Replayed" not in retry.headers


# --- jobs queued or running at once ---------------------------------------------------------


def test_jobs_over_the_queued_limit_are_429(
    limited: Callable[..., TestClient], api_redis: redis.Redis
) -> None:
    client = limited(max_queued=2)
    ids = [client.post("/jobs", json=BODY, headers=bearer(KEY_A)).json()["id"] for _ in range(2)]
    response = client.post("/jobs", json=BODY, headers=bearer(KEY_A))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == str(ratelimit.ACTIVE_RETRY_AFTER_S)
    error = response.json()["error"]
    assert error["type"] == "rate_limited"
    assert "RATE_LIMIT_MAX_QUEUED" in error["message"]
    assert response.json()["detail"]["limit"] == "RATE_LIMIT_MAX_QUEUED"
    assert queued(api_redis) == 2
    # Another key has its own allowance.
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_B)).status_code == 202

    # A finished job frees its slot...
    assert client.post(f"/jobs/{ids[0]}/cancel", headers=bearer(KEY_A)).status_code == 200
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 202
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 429
    # ... and so does one whose record expired (records live a minute at least).
    api_redis.delete(f"darkroom:job:{ids[1]}")
    active = ratelimit.active_key(OWNER_A)
    admitted_ms = api_redis.zscore(active, ids[1])
    assert admitted_ms is not None
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 429
    api_redis.zadd(active, {ids[1]: admitted_ms - ratelimit.RECORD_GRACE_MS - 1000})
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 202


def test_running_jobs_count_as_active(
    limited: Callable[..., TestClient], api_redis: redis.Redis
) -> None:
    from shared.jobs import JobStatus

    client = limited(max_queued=1)
    job_id = client.post("/jobs", json=BODY, headers=bearer(KEY_A)).json()["id"]
    store = client.app.state.darkroom.store  # type: ignore[attr-defined]
    store.transition(job_id, JobStatus.RUNNING, worker="w1")
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 429
    store.transition(job_id, JobStatus.SUCCEEDED)
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 202


def test_the_queued_limit_holds_under_concurrency(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    settings = make_settings(rate_limit_submits_per_minute=0, rate_limit_max_queued=5)
    admitted: list[str] = []
    refused: list[str] = []
    start = threading.Barrier(20)

    def attempt(index: int) -> None:
        start.wait()
        try:
            ratelimit.admit(api_redis, settings, "someone", f"job-{index}")
            admitted.append(f"job-{index}")
        except RateLimited:
            refused.append(f"job-{index}")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # No job here has a record yet (as between admission and storing it): each
    # still holds its slot, and exactly five were admitted.
    assert len(admitted) == 5
    assert len(refused) == 15
    members = {m.decode() for m in api_redis.zrange(ratelimit.active_key("someone"), 0, -1)}
    assert members == set(admitted)


def test_a_job_that_could_not_be_queued_is_refunded(
    limited: Callable[..., TestClient], api_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = limited(per_minute=1, max_queued=1)

    async def broker_down(*_: object, **__: object) -> None:
        raise redis.ConnectionError("broker away")

    # The script that counts, stores and queues the job in one step fails as a whole.
    monkeypatch.setattr("api.enqueue.run", broker_down)
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 503
    assert api_redis.zcard(ratelimit.submits_key(OWNER_A)) == 0
    assert api_redis.zcard(ratelimit.active_key(OWNER_A)) == 0
    monkeypatch.undo()
    assert client.post("/jobs", json=BODY, headers=bearer(KEY_A)).status_code == 202


# --- switched off, and without keys ---------------------------------------------------------


def test_zero_turns_the_limits_off(
    limited: Callable[..., TestClient], api_redis: redis.Redis
) -> None:
    client = limited(per_minute=0, max_queued=0)
    assert {post(client).status_code for _ in range(8)} == {202}
    assert api_redis.keys("darkroom:rate:*") == []


def test_without_keys_every_caller_shares_the_anonymous_allowance(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    settings = make_settings(rate_limit_submits_per_minute=2)
    with TestClient(create_app(settings)) as client:
        assert client.post("/jobs", json=BODY).status_code == 202
        assert client.post("/jobs", json=BODY, headers=bearer(KEY_B)).status_code == 202
        assert client.post("/jobs", json=BODY).status_code == 429
    assert api_redis.zcard(ratelimit.submits_key(ANONYMOUS)) == 2


def test_defaults() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.rate_limit_submits_per_minute == 120
    assert settings.rate_limit_max_queued == 100
