"""Jobs only for models a live worker can serve (issue "More models than GPUs"): refused
at submit otherwise, in each dialect; the model lists say what is servable."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from api.serving import FRESH_S
from shared.settings import Settings
from shared.workers import WorkerInfo, write_worker
from tests.conftest import write_registry
from tests.support.polling import wait_until


@pytest.fixture
def api(
    make_settings: Callable[..., Settings],
    api_redis: redis.Redis,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> Iterator[TestClient]:
    """The test registry and tiny-auto, marked autoscaled; each test writes the live
    worker's record it needs."""
    registry = write_registry(
        tmp_path / "models.yaml",
        tiny_model_dir,
        extra=f"""
          tiny-auto:
            id: "{tiny_model_dir}"
            type: sd
            autoscaled: true
            params:
              default_steps: 2
              default_size: [64, 64]
              max_size: [64, 64]
        """,
    )
    with TestClient(create_app(make_settings(registry_path=registry))) as client:
        yield client


def live(api_redis: redis.Redis, **fields: object) -> None:
    write_worker(api_redis, WorkerInfo(name="w1", state="ready", **fields), ttl_s=60)


def job(model: str) -> dict[str, object]:
    return {"prompt": "x", "model": model}


def refused(api: TestClient, model: str) -> bool:
    """Whether the API refuses `model` (once its reading of the workers is fresh)."""
    return bool(api.post("/jobs", json=job(model)).status_code == 422)


def test_with_no_live_worker_every_model_is_accepted(api: TestClient) -> None:
    for model in ("tiny-sd", "tiny-flaky", "tiny-auto"):
        assert api.post("/jobs", json=job(model)).status_code == 202


def test_a_model_no_live_worker_may_load_is_refused_naming_it(
    api: TestClient, api_redis: redis.Redis
) -> None:
    live(api_redis, model="tiny-sd", served=["tiny-sd", "tiny-batch"])
    wait_until(lambda: refused(api, "tiny-flaky"), timeout_s=FRESH_S * 10, what="refusal")
    answer = api.post("/jobs", json=job("tiny-flaky"))
    error = answer.json()["error"]
    assert (error["type"], error["field"]) == ("model_not_served", "model")
    assert "tiny-flaky" in error["message"]
    assert "tiny-batch" in error["message"]  # what is servable
    # A model a worker may load (not resident), an autoscaled one, no model named: accepted.
    for body in (job("tiny-batch"), job("tiny-auto"), {"prompt": "x"}):
        assert api.post("/jobs", json=body).status_code == 202


def test_the_compatible_apis_refuse_it_in_their_own_words(
    api: TestClient, api_redis: redis.Redis
) -> None:
    live(api_redis, model="tiny-sd", served=["tiny-sd"])
    wait_until(lambda: refused(api, "tiny-flaky"), timeout_s=FRESH_S * 10, what="refusal")
    openai = api.post("/v1/images/generations", json={"prompt": "x", "model": "tiny-flaky"})
    assert openai.status_code == 404
    assert openai.json()["error"]["code"] == "model_not_found"
    a1111 = api.post(
        "/sdapi/v1/txt2img",
        json={"prompt": "x", "override_settings": {"sd_model_checkpoint": "tiny-flaky"}},
    )
    assert a1111.status_code == 404
    assert "tiny-flaky" in a1111.json()["errors"]
    # The A1111 model switch: to a servable model, not to one nobody serves.
    assert (
        api.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-flaky"}).status_code == 404
    )
    assert api.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd"}).status_code == 200


def test_the_model_lists_show_what_is_servable_and_resident(
    api: TestClient, api_redis: redis.Redis
) -> None:
    live(api_redis, model="tiny-sd", served=["tiny-sd", "tiny-batch"], models={"tiny-sd": "device"})
    wait_until(lambda: refused(api, "tiny-flaky"), timeout_s=FRESH_S * 10, what="refusal")
    listed = {m["id"] for m in api.get("/v1/models").json()["data"]}
    assert listed == {"tiny-sd", "tiny-batch", "tiny-auto"}
    checkpoints = {m["model_name"] for m in api.get("/sdapi/v1/sd-models").json()}
    assert checkpoints == listed
    models = api.get("/models").json()["models"]
    assert {n for n, m in models.items() if m["servable"]} == listed
    assert {n for n, m in models.items() if m["resident"]} == {"tiny-sd"}
    assert {n for n, m in models.items() if m["loadable"]} == {"tiny-sd", "tiny-batch"}
    assert models["tiny-auto"]["autoscaled"] is True


def test_an_img2img_call_names_its_model_too(api: TestClient, api_redis: redis.Redis) -> None:
    live(api_redis, model="tiny-sd", served=["tiny-sd"])
    wait_until(lambda: refused(api, "tiny-flaky"), timeout_s=FRESH_S * 10, what="refusal")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    body = {**job("tiny-flaky"), "init_image": base64.b64encode(buffer.getvalue()).decode()}
    assert api.post("/jobs", json=body).status_code == 422


def test_status_sees_no_problem_in_jobs_a_worker_will_load_their_model_for(
    api: TestClient, api_redis: redis.Redis
) -> None:
    live(api_redis, model="tiny-sd", served=["tiny-sd", "tiny-batch"])
    wait_until(lambda: refused(api, "tiny-flaky"), timeout_s=FRESH_S * 10, what="refusal")
    assert api.post("/jobs", json=job("tiny-batch")).status_code == 202
    assert api.post("/jobs", json=job("tiny-auto")).status_code == 202
    status = api.get("/status").json()
    assert status["models"]["tiny-batch"] == {"workers": 0, "loadable": 1, "queued": 1}
    assert not [p for p in status["problems"] if "tiny-batch" in p]
    assert [p for p in status["problems"] if "tiny-auto" in p]  # nobody may load it yet
