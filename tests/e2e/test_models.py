"""A worker serving several models (WORKER_MODELS), end to end: a real worker process
with three tiny models of different weights, a slow-loading one and a broken one."""

from __future__ import annotations

import io
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from darkroom.stack import free_port
from shared.registry import Registry, load_registry
from shared.settings import Settings
from shared.workers import read_worker
from tests.e2e.helpers import submit, wait_for
from tests.support.metrics import read_metrics
from tests.support.polling import wait_until
from tests.support.processes import WorkerProcess, start_worker
from worker import inference
from worker.loader import load_model
from worker.models import model_bytes
from worker.tiny import ensure_tiny_sd

MODELS_DB = 5
NAMES = ["tiny-a", "tiny-b", "tiny-c"]
PIXEL_TOLERANCE = 3
BODY = {"prompt": "a red fox", "seed": 5, "width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def registry_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models-e2e")
    small = {"default_steps": 2, "default_size": [64, 64], "max_size": [128, 128]}
    models: dict[str, Any] = {
        name: {"id": str(ensure_tiny_sd(root / name, seed=seed)), "type": "sd", "params": small}
        for seed, name in enumerate(NAMES, start=1)
    }
    models["tiny-slow"] = {
        "id": models["tiny-a"]["id"],
        "type": "custom",
        "pipeline_class": "tests.support.pipelines:SlowLoadingPipeline",
        "params": {**small, "supports_i2i": False},
    }
    models["broken"] = {"id": str(root / "not-there"), "type": "sd", "params": small}
    path = root / "models.yaml"
    runtime = {"primary_model": "tiny-a", "fallback_models": []}
    path.write_text(yaml.safe_dump({"models": models, "runtime": runtime}))
    return path


@pytest.fixture(scope="module")
def registry(registry_path: Path) -> Registry:
    return load_registry(registry_path)


@pytest.fixture(scope="module")
def env(
    redis_base_url: str, registry_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    url = f"{redis_base_url}/{MODELS_DB}"
    redis.Redis.from_url(url).flushdb()
    images = tmp_path_factory.mktemp("models-images")
    return {
        "REDIS_URL": url,
        "MODEL_CONFIG": str(registry_path),
        "STORAGE_URL": f"file://{images}",
        "WORKER_MODELS": ",".join([*NAMES, "tiny-slow", "broken"]),
        "WORKER_TTL_S": "3",
    }


@pytest.fixture(scope="module")
def budget_of_two(registry: Registry) -> int:
    one = load_model("tiny-a", registry.models["tiny-a"], registry.runtime.memory, "cpu")
    return int(model_bytes(one) * 2.5)


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def worker(
    env: dict[str, str],
    budget_of_two: int,
    metrics_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    logs = tmp_path_factory.mktemp("models-logs")
    worker_env = {
        **env,
        "WORKER_DEVICE_MEMORY": str(budget_of_two),
        "WORKER_METRICS_PORT": str(metrics_port),
    }
    started = start_worker("multi@test", worker_env, logs, env["REDIS_URL"])
    yield started
    started.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def api(env: dict[str, str]) -> Iterator[TestClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=env["REDIS_URL"],
        registry_path=Path(env["MODEL_CONFIG"]),
        storage_url=env["STORAGE_URL"],
        public_base_url="http://testserver",
    )
    with TestClient(create_app(settings)) as client:
        yield client


def pixels(api: TestClient, job: dict[str, Any]) -> np.ndarray:
    data = api.get(job["images"][0]["url"].removeprefix("http://testserver")).content
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def alone(registry: Registry, name: str) -> np.ndarray:
    model = load_model(name, registry.models[name], registry.runtime.memory, "cpu")
    [image] = inference.generate(model, _params(registry, name))
    return np.asarray(image, dtype=np.int16)


def _params(registry: Registry, name: str) -> Any:
    from api.params import resolve_params
    from shared.jobs import JobCreate

    return resolve_params(JobCreate(**BODY, model=name), registry.models[name], None)


def loads_of(worker: WorkerProcess, name: str) -> int:
    return worker.log_path.read_text().count(f"model {name} on the device from disk")


def run(api: TestClient, name: str) -> dict[str, Any]:
    return wait_for(api, submit(api, **BODY, model=name)["id"], timeout_s=120)


def test_each_job_gets_images_of_the_model_it_named(
    api: TestClient, worker: WorkerProcess, registry: Registry
) -> None:
    done = {name: run(api, name) for name in NAMES}
    for name, job in done.items():
        assert job["status"] == "succeeded", job["error"]
        assert job["model_used"] == name
        difference = np.abs(pixels(api, job) - alone(registry, name))
        assert difference.max() <= PIXEL_TOLERANCE, (name, difference.max())
    assert np.abs(pixels(api, done["tiny-a"]) - pixels(api, done["tiny-b"])).mean() > 5


def test_a_resident_model_is_not_loaded_again_and_the_lru_keeps_two(
    api: TestClient, worker: WorkerProcess, env: dict[str, str]
) -> None:
    for name in ["tiny-b", "tiny-c", "tiny-c", "tiny-b"]:
        assert run(api, name)["status"] == "succeeded"
    before = loads_of(worker, "tiny-b")
    for _ in range(3):
        assert run(api, "tiny-b")["status"] == "succeeded"
    assert loads_of(worker, "tiny-b") == before
    client = redis.Redis.from_url(env["REDIS_URL"])
    record = wait_until(
        lambda: (r := read_worker(client, worker.name)) and len(r.models) == 2 and r,
        what="the worker's record to list two models",
    )
    assert set(record.models) == {"tiny-b", "tiny-c"}  # tiny-a, used least recently, left
    assert set(record.models.values()) == {"device"}
    assert record.served == [*NAMES, "tiny-slow", "broken"]


def test_the_worker_counts_its_swaps_and_says_what_it_holds(
    api: TestClient, worker: WorkerProcess, metrics_port: int
) -> None:
    for name in ["tiny-a", "tiny-b", "tiny-c"]:  # at most two fit: a swap each time
        assert run(api, name)["status"] == "succeeded"
    metrics = read_metrics(f"http://127.0.0.1:{metrics_port}/metrics")
    assert metrics.value("darkroom_model_swaps_total", model="tiny-c") >= 1
    assert metrics.value("darkroom_model_load_seconds_count", model="tiny-c", source="disk") >= 1
    assert metrics.value("darkroom_models_resident", model="tiny-c", tier="device") == 1
    assert metrics.value("darkroom_models_resident", model="tiny-a", tier="device") == 0


def test_a_model_that_will_not_load_fails_its_job_and_no_other_serves_it(
    api: TestClient, worker: WorkerProcess
) -> None:
    job = run(api, "broken")
    assert job["status"] == "failed"
    assert job["error"]["type"] == "model_load_error"
    assert "model broken could not be loaded" in job["error"]["message"]
    assert run(api, "tiny-a")["status"] == "succeeded"  # the worker serves on


def test_a_cancel_while_its_model_loads(api: TestClient, worker: WorkerProcess) -> None:
    job = submit(api, **BODY, model="tiny-slow")
    wait_until(
        lambda: "loading model tiny-slow" in worker.log_path.read_text(),
        what="the slow model to start loading",
    )
    assert api.post(f"/jobs/{job['id']}/cancel").status_code in (200, 202)
    assert wait_for(api, job["id"], timeout_s=60)["status"] == "canceled"
    assert run(api, "tiny-c")["status"] == "succeeded"


def test_a_worker_killed_while_loading_loses_no_job(
    api: TestClient,
    env: dict[str, str],
    budget_of_two: int,
    tmp_path_factory: pytest.TempPathFactory,
    worker: WorkerProcess,
) -> None:
    logs = tmp_path_factory.mktemp("models-kill")
    # Room for one model: tiny-slow, loaded at start, leaves for tiny-a, then comes back.
    one_model = {
        "WORKER_MODELS": "tiny-slow,tiny-a",
        "WORKER_DEVICE_MEMORY": str(budget_of_two // 2),
    }
    tag = uuid.uuid4().hex[:6]
    worker.stop(signal.SIGTERM)  # only the dying one may take the job
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        started.append(start_worker(name, {**env, **one_model}, logs, env["REDIS_URL"]))
        return started[-1]

    try:
        doomed = start(f"doomed-{tag}@test")
        job = submit(api, **BODY, model="tiny-a")
        assert wait_for(api, job["id"], timeout_s=60)["status"] == "succeeded"
        slow = submit(api, **BODY, model="tiny-slow")
        wait_until(
            lambda: doomed.log_path.read_text().count("loading model tiny-slow") >= 2,
            what="tiny-slow loading again",
        )
        doomed.stop(signal.SIGKILL)
        heir = start(f"heir-{tag}@test")
        done = wait_for(api, slow["id"], timeout_s=120)
        assert done["status"] == "succeeded", done["error"]
        assert done["worker"] == heir.name
    finally:
        for process in started:
            process.stop(signal.SIGKILL)
