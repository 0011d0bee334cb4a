"""Health, readiness, status, the model list and local files, against a real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from shared.jobs import StoredImage
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.workers import ModelFailure, WorkerInfo, write_worker

MODEL_FIELDS = {
    "id",
    "type",
    "requires_auth",
    "default_steps",
    "max_steps",
    "max_tokens",
    "supports_i2i",
    "default_size",
    "max_size",
    "description",
}


def test_healthz(api: TestClient) -> None:
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_with_local_storage(api: TestClient) -> None:
    response = api.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"redis": "ok", "storage": "ok"}}


def test_readyz_with_s3_storage(
    make_settings: Callable[..., Settings], s3_endpoint: str, api_redis: redis.Redis
) -> None:
    from tests.conftest import S3_BUCKET

    settings = make_settings(storage_url=f"s3://{S3_BUCKET}/imgs", s3_endpoint_url=s3_endpoint)
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["storage"] == "ok"


def test_readyz_with_missing_bucket_is_ready_and_says_misconfigured(
    make_settings: Callable[..., Settings], s3_endpoint: str, api_redis: redis.Redis
) -> None:
    # Readiness depends on Redis alone: the storage is reported, in a word, no name.
    settings = make_settings(storage_url="s3://no-such-bucket/x", s3_endpoint_url=s3_endpoint)
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body == {"status": "ready", "checks": {"redis": "ok", "storage": "misconfigured"}}


def test_status_without_workers(api: TestClient) -> None:
    response = api.get("/status")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["redis"] == {"reachable": True}
    assert body["workers"] == []
    assert any("no live workers" in problem for problem in body["problems"])
    assert body["queues"]["darkroom.default"] == 0
    assert body["models"]["tiny-sd"] == {"workers": 0, "loadable": 0, "queued": 0}


def test_status_with_a_worker(api: TestClient, api_redis: redis.Redis) -> None:
    write_worker(api_redis, WorkerInfo(name="w1", state="ready", model="tiny-sd"))
    write_worker(
        api_redis,
        WorkerInfo(
            name="w2",
            state="no_model",
            failures=[ModelFailure(model="missing", reason="weights not found")],
        ),
    )
    body = api.get("/status").json()
    assert body["status"] == "ok"
    assert sorted(w["name"] for w in body["workers"]) == ["w1", "w2"]
    assert body["models"]["tiny-sd"]["workers"] == 1
    assert not any("no live workers" in p for p in body["problems"])
    assert any("w2" in p and "weights not found" in p for p in body["problems"])


def test_status_counts_queued_jobs(api: TestClient) -> None:
    assert api.post("/jobs", json={"prompt": "x", "model": "tiny-sd"}).status_code == 202
    body = api.get("/status").json()
    assert body["models"]["tiny-sd"]["queued"] == 1
    assert body["queues"]["darkroom.model.tiny-sd"] == 1  # the broker's list


def test_status_names_models_whose_jobs_no_worker_serves(
    api: TestClient, api_redis: redis.Redis
) -> None:
    # Accepted while no worker is live (they may be starting)...
    for _ in range(2):
        assert api.post("/jobs", json={"prompt": "x", "model": "tiny-flaky"}).status_code == 202
    assert api.post("/jobs", json={"prompt": "x", "model": "tiny-sd"}).status_code == 202
    # ...then the only worker that started serves another model.
    write_worker(api_redis, WorkerInfo(name="w1", state="ready", model="tiny-sd"))

    body = api.get("/status").json()
    assert body["models"]["tiny-flaky"] == {"workers": 0, "loadable": 0, "queued": 2}
    [problem] = body["problems"]
    assert "model tiny-flaky: 2 queued job(s) and no live worker serves it" in problem


def test_models_shape(api: TestClient, tiny_model_dir: Path) -> None:
    response = api.get("/models")
    assert response.status_code == 200
    body = response.json()
    assert set(body["models"]) == {"tiny-sd", "tiny-flaky", "tiny-batch", "missing"}
    for info in body["models"].values():
        assert set(info) >= MODEL_FIELDS
    tiny = body["models"]["tiny-sd"]
    assert tiny["id"] == str(tiny_model_dir)
    assert tiny["type"] == "sd"
    assert tiny["requires_auth"] is False
    assert tiny["default_steps"] == 2
    assert tiny["max_steps"] == 10
    assert tiny["max_tokens"] == 77
    assert tiny["supports_i2i"] is True
    assert tiny["default_size"] == [64, 64]
    assert tiny["max_size"] == [256, 256]
    assert tiny["description"] == ""
    flaky = body["models"]["tiny-flaky"]
    assert flaky["supports_i2i"] is False
    assert flaky["max_size"] == [128, 128]
    assert flaky["pipeline_class"] == "tests.support.pipelines:FlakyPipeline"
    assert (tiny["max_batch_size"], tiny["batch_window"]) == (1, 0.05)  # batching off
    batching = body["models"]["tiny-batch"]
    assert (batching["max_batch_size"], batching["batch_window"]) == (4, 0.5)
    assert body["primary"] == "tiny-sd"
    assert body["fallback_chain"] == []  # the only fallback is the primary itself
    assert body["current"] is None


def test_models_current_follows_live_workers(api: TestClient, api_redis: redis.Redis) -> None:
    write_worker(api_redis, WorkerInfo(name="w1", state="ready", model="tiny-sd"))
    body = api.get("/models").json()
    assert body["current"] == "tiny-sd"
    assert body["models"]["tiny-sd"]["workers"] == 1
    assert body["served"] == {"tiny-sd": 1}


def test_models_current_when_primary_not_served(api: TestClient, api_redis: redis.Redis) -> None:
    write_worker(api_redis, WorkerInfo(name="w1", state="ready", model="tiny-flaky"))
    write_worker(
        api_redis,
        WorkerInfo(
            name="w2",
            state="no_model",
            failures=[ModelFailure(model="missing", reason="not found")],
        ),
    )
    body = api.get("/models").json()
    assert body["current"] == "tiny-flaky"
    assert body["load_failures"] == {"w2": [{"model": "missing", "reason": "not found"}]}


def test_models_with_primary_and_fallback_overrides(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    settings = make_settings(primary_model="tiny-flaky")
    with TestClient(create_app(settings)) as client:
        body = client.get("/models").json()
    assert body["primary"] == "tiny-flaky"
    assert body["fallback_chain"] == ["tiny-sd"]
    assert body["enable_fallback"] is True


# --- files ------------------------------------------------------------------------------------


def storage_of(settings: Settings) -> LocalStorage:
    root = Path(settings.storage_url.removeprefix("file://"))
    return LocalStorage(root, settings.public_base_url)


@pytest.fixture
def files_api(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> Iterator[tuple[TestClient, LocalStorage]]:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        yield client, storage_of(settings)


def store_image(client: TestClient, storage: LocalStorage, data: bytes) -> str:
    """Submit a job and give it one stored image, as a worker would; the image's key."""
    job_id = client.post("/jobs", json={"prompt": "x"}).json()["id"]
    key = f"jobs/{job_id}/0.png"
    storage.put(key, data, "image/png")
    store = client.app.state.darkroom.store  # type: ignore[attr-defined]
    image = StoredImage(key=key, width=64, height=64, seed=1)
    store.update(job_id, images=[image.model_dump(mode="json")])
    return key


def test_files_serves_a_stored_image(files_api: tuple[TestClient, LocalStorage]) -> None:
    client, storage = files_api
    data = b"\x89PNG\r\n\x1a\n not really a png"
    key = store_image(client, storage, data)
    url = storage.url(key)
    assert url == f"http://testserver/files/{key}"
    response = client.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert client.get(f"/jobs/{key.split('/')[1]}").json()["images"][0]["url"] == url


def test_files_serves_only_images_of_jobs(files_api: tuple[TestClient, LocalStorage]) -> None:
    client, storage = files_api
    key = store_image(client, storage, b"png")
    job_dir = key.rsplit("/", 1)[0]
    storage.put(f"{job_dir}/.part-x", b"half", "image/png")  # not listed on the job
    storage.put("job1/0.png", b"png", "image/png")  # not under jobs/
    storage.put("jobs/0123456789abcdef/0.png", b"png", "image/png")  # no such job
    for path in (f"{job_dir}/.part-x", "job1/0.png", "jobs/0123456789abcdef/0.png", job_dir):
        assert client.get(f"/files/{path}").status_code == 404, path


@pytest.mark.parametrize(
    "path",
    [
        "/files/..%2F..%2Fetc%2Fpasswd",
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/%2Fetc%2Fpasswd",
        "/files//etc/passwd",
        "/files/job1/..%2F..%2F..%2Fetc%2Fpasswd",
        "/files/../../etc/passwd",
    ],
)
def test_files_outside_the_root_are_404(
    files_api: tuple[TestClient, LocalStorage], path: str
) -> None:
    client, storage = files_api
    storage.put("job1/0.png", b"png", "image/png")
    response = client.get(path)
    assert response.status_code == 404
    assert "root:" not in response.text


def test_files_missing_is_404(files_api: tuple[TestClient, LocalStorage]) -> None:
    client, storage = files_api
    storage.put("job1/0.png", b"png", "image/png")
    for path in ("/files/job1/1.png", "/files/job1", "/files/"):
        response = client.get(path)
        assert response.status_code == 404, path


def test_files_with_s3_storage_is_404(
    make_settings: Callable[..., Settings], s3_endpoint: str, api_redis: redis.Redis
) -> None:
    settings = make_settings(storage_url="s3://bucket/x", s3_endpoint_url=s3_endpoint)
    with TestClient(create_app(settings)) as client:
        response = client.get("/files/job1/0.png")
    assert response.status_code == 404
    assert "object store" in response.json()["error"]["message"]


# --- Redis unreachable ----------------------------------------------------------------------------


@pytest.fixture
def api_without_redis(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(redis_url="redis://127.0.0.1:1/0"))) as client:
        yield client


def test_without_redis_post_job_is_503(api_without_redis: TestClient) -> None:
    response = api_without_redis.post("/jobs", json={"prompt": "x"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "service_unavailable"
    assert "unreachable" in error["message"]


def test_without_redis_readyz_is_503(api_without_redis: TestClient) -> None:
    response = api_without_redis.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["checks"] == {"redis": "unreachable", "storage": "ok"}


def test_without_redis_get_job_is_503(api_without_redis: TestClient) -> None:
    response = api_without_redis.get("/jobs/x")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "service_unavailable"


def test_without_redis_healthz_still_ok(api_without_redis: TestClient) -> None:
    assert api_without_redis.get("/healthz").status_code == 200


def test_without_redis_status_says_down(api_without_redis: TestClient) -> None:
    response = api_without_redis.get("/status")
    body = response.json()
    assert body["status"] == "down"
    assert body["redis"]["reachable"] is False


def test_without_redis_models_is_503(api_without_redis: TestClient) -> None:
    assert api_without_redis.get("/models").status_code == 503
