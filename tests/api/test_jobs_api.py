"""POST /jobs and GET /jobs/{id} against a real Redis, with no worker behind the API."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from api.submission import submit
from darkroom.client import DarkroomClient
from shared.constants import DEFAULT_QUEUE, GENERATE_TASK, model_queue
from shared.jobs import MAX_SEED, JobCreate, JobStatus
from shared.previews import PreviewStore, watch_key
from shared.settings import Settings
from shared.store import input_key, job_key
from tests.support.polling import wait_until

TINY_QUEUE = model_queue("tiny-sd")
CONTRACT_FIELDS = {
    "id",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "model",
    "model_used",
    "params",
    "progress",
    "images",
    "error",
    "urls",
}


def png_b64(width: int, height: int, mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def broker_lists(client: redis.Redis, queue: str) -> list[str]:
    """The Redis lists holding `queue`'s messages: the queue's own name, plus any
    per-priority lists kombu keeps beside it ("<queue>:<step>")."""
    extra = sorted(k.decode() for k in client.keys(f"{queue}:*") if client.type(k) == b"list")
    return [queue, *extra]


def queue_length(client: redis.Redis, queue: str) -> int:
    return sum(client.llen(name) for name in broker_lists(client, queue))


def queued_job_ids(client: redis.Redis, queue: str) -> list[str]:
    """Job ids in the Celery messages waiting in `queue` (any priority), oldest first."""
    ids = []
    for name in broker_lists(client, queue):
        for raw in reversed(client.lrange(name, 0, -1)):
            message = json.loads(raw)
            assert message["headers"]["task"] == GENERATE_TASK
            assert message["properties"]["delivery_info"]["routing_key"] == queue
            args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
            assert kwargs == {}
            ids.append(args[0])
    return ids


def snapshot(client: redis.Redis) -> dict[str, object]:
    """Every key of the test database, with list lengths (the Celery queues)."""
    state: dict[str, object] = {}
    for key in client.keys("*"):
        name = key.decode()
        state[name] = client.llen(key) if client.type(key) == b"list" else client.type(key)
    return state


# --- accepted jobs ------------------------------------------------------------------------


def test_post_job_with_model(api: TestClient, api_redis: redis.Redis) -> None:
    response = api.post("/jobs", json={"prompt": "a lighthouse", "model": "tiny-sd", "seed": 7})
    assert response.status_code == 202
    job = response.json()
    assert set(job) >= CONTRACT_FIELDS
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["created_at"]
    assert job["started_at"] is None
    assert job["finished_at"] is None
    assert job["model"] == "tiny-sd"
    assert job["model_used"] is None
    assert job["progress"] == 0.0
    assert job["images"] == []
    assert job["error"] is None
    assert job["urls"] == {
        "get": f"http://testserver/jobs/{job['id']}",
        "cancel": f"http://testserver/jobs/{job['id']}/cancel",
        "events": f"http://testserver/jobs/{job['id']}/events",
        "preview": f"http://testserver/jobs/{job['id']}/preview",
    }
    assert job["queue"] == TINY_QUEUE
    params = job["params"]
    assert params["prompt"] == "a lighthouse"
    assert params["seed"] == 7
    # The registry's defaults for tiny-sd.
    assert params["steps"] == 2
    assert (params["width"], params["height"]) == (64, 64)
    assert params["negative_prompt"] == "blurry"
    assert params["guidance_scale"] == 7.5
    assert params["num_images"] == 1
    assert params["mode"] == "txt2img"
    assert params["strength"] is None

    # The record is in Redis, and its id is in a Celery message on the model's queue.
    assert api_redis.exists(job_key(job["id"]))
    assert 0 < api_redis.ttl(job_key(job["id"])) <= 24 * 3600
    assert queue_length(api_redis, TINY_QUEUE) == 1
    assert queue_length(api_redis, DEFAULT_QUEUE) == 0
    assert queued_job_ids(api_redis, TINY_QUEUE) == [job["id"]]


def test_the_synchronous_submit_queues_like_post(api: TestClient, api_redis: redis.Redis) -> None:
    """submit called directly, as the compatible APIs call it."""
    state = api.app.state.darkroom  # type: ignore[attr-defined]
    request = JobCreate(prompt="a lighthouse", model="tiny-sd")
    submission = api.portal.call(submit, state, request)  # type: ignore[union-attr]
    assert not submission.replayed
    assert submission.queue_position == 0
    assert queued_job_ids(api_redis, TINY_QUEUE) == [submission.record.id]
    assert api.get(f"/jobs/{submission.record.id}").json()["status"] == "queued"


def test_post_job_without_model_goes_to_default_queue(
    api: TestClient, api_redis: redis.Redis
) -> None:
    response = api.post("/jobs", json={"prompt": "a lighthouse"})
    assert response.status_code == 202
    job = response.json()
    assert job["model"] == "tiny-sd"  # the registry's primary
    assert job["queue"] == DEFAULT_QUEUE
    assert 0 <= job["params"]["seed"] <= MAX_SEED
    assert queue_length(api_redis, DEFAULT_QUEUE) == 1
    assert queue_length(api_redis, TINY_QUEUE) == 0
    assert queued_job_ids(api_redis, DEFAULT_QUEUE) == [job["id"]]


def test_get_job_returns_what_post_answered(api: TestClient) -> None:
    posted = api.post("/jobs", json={"prompt": "a fox", "model": "tiny-sd", "steps": 5}).json()
    response = api.get(f"/jobs/{posted['id']}")
    assert response.status_code == 200
    got = response.json()
    for field in CONTRACT_FIELDS:
        assert got[field] == posted[field], field
    assert response.json()["params"]["steps"] == 5


def test_jobs_get_distinct_ids_and_seeds(api: TestClient, api_redis: redis.Redis) -> None:
    jobs = [api.post("/jobs", json={"prompt": f"p{i}"}).json() for i in range(3)]
    assert len({j["id"] for j in jobs}) == 3
    assert len({j["params"]["seed"] for j in jobs}) > 1
    assert queued_job_ids(api_redis, DEFAULT_QUEUE) == [j["id"] for j in jobs]


def test_explicit_values_are_kept(api: TestClient) -> None:
    body = {
        "prompt": "a fox",
        "model": "tiny-sd",
        "negative_prompt": "",
        "width": 128,
        "height": 256,
        "steps": 10,
        "guidance_scale": 0,
        "seed": 0,
        "num_images": 4,
    }
    response = api.post("/jobs", json=body)
    assert response.status_code == 202
    params = response.json()["params"]
    assert params["negative_prompt"] == ""
    assert (params["width"], params["height"]) == (128, 256)
    assert params["steps"] == 10
    assert params["guidance_scale"] == 0
    assert params["seed"] == 0
    assert params["num_images"] == 4


def test_img2img_job_stores_its_input(api: TestClient, api_redis: redis.Redis) -> None:
    image = png_b64(100, 90)
    response = api.post(
        "/jobs", json={"prompt": "x", "model": "tiny-sd", "init_image": image, "strength": 0.4}
    )
    assert response.status_code == 202
    job = response.json()
    assert job["params"]["mode"] == "img2img"
    assert job["params"]["strength"] == 0.4
    assert (job["params"]["width"], job["params"]["height"]) == (96, 88)
    # The image is kept apart from the record, which never carries the base64.
    assert api_redis.get(input_key(job["id"])) == base64.b64decode(image)
    assert image not in json.dumps(job)
    assert all(image.encode() not in v for v in api_redis.hvals(job_key(job["id"])))


def test_img2img_data_url_accepted(api: TestClient) -> None:
    response = api.post(
        "/jobs",
        json={
            "prompt": "x",
            "model": "tiny-sd",
            "init_image": "data:image/png;base64," + png_b64(64, 64),
        },
    )
    assert response.status_code == 202
    assert response.json()["params"]["strength"] == 0.75


def test_unknown_job_is_404(api: TestClient) -> None:
    response = api.get("/jobs/0123456789abcdef")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found"
    assert "0123456789abcdef" in error["message"]


# --- refused jobs ----------------------------------------------------------------------------

BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "missing prompt": ({"model": "tiny-sd"}, "prompt"),
    "empty prompt": ({"prompt": ""}, "prompt"),
    "prompt of spaces": ({"prompt": "   "}, "prompt"),
    "prompt of whitespace": ({"prompt": " \t\n\u3000"}, "prompt"),
    "negative prompt of spaces": ({"prompt": "x", "negative_prompt": "  "}, "negative_prompt"),
    "model of spaces": ({"prompt": "x", "model": "  "}, "model"),
    "webhook of spaces": ({"prompt": "x", "webhook": " "}, "webhook"),
    "prompt too long": ({"prompt": "x" * 4001}, "prompt"),
    "negative seed": ({"prompt": "x", "seed": -1}, "seed"),
    "seed too large": ({"prompt": "x", "seed": 2**32}, "seed"),
    "no images": ({"prompt": "x", "num_images": 0}, "num_images"),
    "too many images": ({"prompt": "x", "num_images": 5}, "num_images"),
    "strength zero": ({"prompt": "x", "strength": 0}, "strength"),
    "strength over one": ({"prompt": "x", "strength": 1.5}, "strength"),
    "strength without image": ({"prompt": "x", "strength": 0.5}, "strength"),
    "steps over max": ({"prompt": "x", "model": "tiny-sd", "steps": 11}, "steps"),
    "steps zero": ({"prompt": "x", "steps": 0}, "steps"),
    "width not multiple of 8": ({"prompt": "x", "width": 100}, "width"),
    "width over max": ({"prompt": "x", "model": "tiny-sd", "width": 264}, "width"),
    "height over max": ({"prompt": "x", "model": "tiny-flaky", "height": 136}, "height"),
    "guidance negative": ({"prompt": "x", "guidance_scale": -1}, "guidance_scale"),
    "unknown model": ({"prompt": "x", "model": "dall-e-9"}, "model"),
    "unknown field": ({"prompt": "x", "scheduler_magic": "euler"}, "scheduler_magic"),
    "wrong type": ({"prompt": "x", "steps": "many"}, "steps"),
    "bad base64 image": ({"prompt": "x", "init_image": "not base64!!"}, "init_image"),
    "garbage image": (
        {"prompt": "x", "init_image": base64.b64encode(b"GIF89a garbage").decode()},
        "init_image",
    ),
    "image on model without i2i": (
        {"prompt": "x", "model": "tiny-flaky", "init_image": png_b64(64, 64)},
        "init_image",
    ),
    "negative prompt on model without it": (
        {"prompt": "x", "model": "tiny-flaky", "negative_prompt": "blurry"},
        "negative_prompt",
    ),
    "bad webhook event": (
        {"prompt": "x", "webhook_events_filter": ["finished"]},
        "webhook_events_filter.0",
    ),
}


@pytest.mark.parametrize(("body", "field"), list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_request_is_422_and_nothing_is_queued(
    api: TestClient, api_redis: redis.Redis, body: dict[str, Any], field: str
) -> None:
    before = snapshot(api_redis)
    response = api.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] in {"validation_error", "invalid_request"}
    assert error["field"] == field
    assert field.split(".")[0] in error["message"] or error["type"] == "invalid_request"
    assert error["message"]
    assert snapshot(api_redis) == before
    assert api_redis.keys("darkroom:job*") == []
    assert queue_length(api_redis, DEFAULT_QUEUE) == 0
    assert queue_length(api_redis, TINY_QUEUE) == 0


def test_invalid_request_message_is_specific(api: TestClient) -> None:
    response = api.post("/jobs", json={"prompt": "x", "model": "tiny-sd", "steps": 11})
    assert response.json()["error"]["message"] == "steps 11 exceeds this model's max_steps 10"
    response = api.post("/jobs", json={"prompt": "x", "model": "dall-e-9"})
    message = response.json()["error"]["message"]
    assert "dall-e-9" in message
    assert "tiny-sd" in message


def test_validation_message_names_the_field(api: TestClient) -> None:
    response = api.post("/jobs", json={"prompt": "x", "seed": -1})
    assert response.json()["error"]["message"].startswith("seed: ")


def test_decompression_bomb_is_422(api: TestClient, api_redis: redis.Redis) -> None:
    bomb = png_b64(20000, 20000, mode="1")
    response = api.post("/jobs", json={"prompt": "x", "model": "tiny-sd", "init_image": bomb})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "init_image"
    assert api_redis.keys("darkroom:job*") == []


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b"[1, 2]", b'"prompt"', b"null", b'{"prompt": "x",}']
)
def test_invalid_json_is_422(api: TestClient, api_redis: redis.Redis, raw: bytes) -> None:
    response = api.post("/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "validation_error"
    assert api_redis.keys("darkroom:job*") == []


# --- body size -------------------------------------------------------------------------------


@pytest.fixture
def small_api(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(max_request_bytes=2048))) as client:
        yield client


def test_body_over_limit_is_413(small_api: TestClient, api_redis: redis.Redis) -> None:
    response = small_api.post("/jobs", json={"prompt": "x" * 3000})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["type"] == "payload_too_large"
    assert "2048" in error["message"]
    assert api_redis.keys("darkroom:job*") == []
    assert queue_length(api_redis, DEFAULT_QUEUE) == 0


def test_streamed_body_over_limit_is_413(small_api: TestClient, api_redis: redis.Redis) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}'

    response = small_api.post(
        "/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "payload_too_large"
    assert api_redis.keys("darkroom:job*") == []


def test_body_under_limit_is_accepted(small_api: TestClient) -> None:
    assert small_api.post("/jobs", json={"prompt": "x" * 1500}).status_code == 202


def test_streamed_body_under_limit_is_accepted(small_api: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        yield b"y" * 1000
        yield b'", "seed": 5}'

    response = small_api.post(
        "/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 202
    assert response.json()["params"]["prompt"] == "y" * 1000
    assert response.json()["params"]["seed"] == 5


# --- Redis unreachable ------------------------------------------------------------------------


@pytest.fixture
def api_without_redis(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        yield client


def test_post_job_without_redis_is_503(api_without_redis: TestClient) -> None:
    response = api_without_redis.post("/jobs", json={"prompt": "x"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "service_unavailable"
    assert "Redis" in error["message"] or "queue" in error["message"]


def test_get_job_without_redis_is_503(api_without_redis: TestClient) -> None:
    response = api_without_redis.get("/jobs/x")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "service_unavailable"


def test_validation_still_answers_without_redis(api_without_redis: TestClient) -> None:
    # A bad request is refused before Redis is touched.
    assert api_without_redis.post("/jobs", json={"prompt": ""}).status_code == 422


def test_a_filtered_listing_follows_its_short_pages(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ?status= few jobs match answers short pages with a next_cursor; the client
    (darkroom jobs) follows them to the jobs that match."""
    ids = [api.post("/jobs", json={"prompt": f"p{i}"}).json()["id"] for i in range(5)]
    for job_id in ids[2:]:  # the three newest
        assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    monkeypatch.setattr("shared.store.LIST_SCAN_MAX", 2)
    first = api.get("/jobs", params={"status": "queued", "limit": 5}).json()
    assert first["jobs"] == []
    assert first["next_cursor"] is not None
    client = DarkroomClient("http://testserver")
    client.http = api
    assert [job["id"] for job in client.list_jobs(limit=5, status="queued")] == [ids[1], ids[0]]


def test_the_event_stream_sends_its_events_in_the_order_of_their_numbers(
    api: TestClient, api_redis: redis.Redis
) -> None:
    """A preview the worker stored just before the progress the stream reads has the
    lower number, and goes out first."""
    job_id = api.post("/jobs", json={"prompt": "a lighthouse"}).json()["id"]
    store = api.app.state.darkroom.store  # type: ignore[attr-defined]
    store.transition(job_id, JobStatus.RUNNING, worker="w1")
    preview_seq = PreviewStore(api_redis).store(job_id, 1, 2, [b"RIFF-webp"])
    store.set_progress(job_id, 0.5)

    def finish_once_watched() -> None:
        # The stream marks the job watched after its first read of the record.
        wait_until(lambda: api_redis.exists(watch_key(job_id)), what="the stream's first read")
        store.transition(job_id, JobStatus.SUCCEEDED)

    finisher = threading.Thread(target=finish_once_watched)
    finisher.start()
    body = api.get(f"/jobs/{job_id}/events").text
    finisher.join()
    ids = [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]
    assert preview_seq in ids
    assert ids == sorted(ids)
