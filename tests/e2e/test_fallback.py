"""Model fallback and "no model" across real processes: Celery workers, Redis, the API.

These workers use their own registries and Redis database (12), apart from the
session's end-to-end workers, so what GET /models and GET /status report here
comes from these workers alone.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from shared.settings import Settings
from shared.workers import WorkerInfo, live_workers
from tests.conftest import write_registry
from tests.e2e.helpers import submit, wait_for
from tests.support.processes import WorkerProcess, start_worker

FALLBACK_DB = 12
FALLBACK_WORKER = "fallback@test"
NO_MODEL_WORKER = "nomodel@test"
NO_PIPELINE = "no image pipeline could be initialised"


@pytest.fixture(scope="module")
def redis_url(redis_base_url: str) -> str:
    url = f"{redis_base_url}/{FALLBACK_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fallback")


@pytest.fixture(scope="module")
def registry_path(home: Path, tiny_model_dir: Path) -> Path:
    """Primary "missing" (no files on disk), fallback tiny-sd."""
    return write_registry(home / "models.yaml", tiny_model_dir, primary="missing")


@pytest.fixture(scope="module")
def settings(redis_url: str, registry_path: Path, home: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=redis_url,
        registry_path=registry_path,
        storage_url=f"file://{home / 'images'}",
        public_base_url="http://testserver",
    )


@pytest.fixture(scope="module")
def worker_env(settings: Settings) -> dict[str, str]:
    return {
        "REDIS_URL": settings.redis_url,
        "MODEL_CONFIG": str(settings.registry_path),
        "STORAGE_URL": settings.storage_url,
        "DEVICE": "cpu",
    }


@pytest.fixture(scope="module")
def fallback_worker(
    worker_env: dict[str, str], redis_url: str, home: Path
) -> Iterator[WorkerProcess]:
    worker = start_worker(FALLBACK_WORKER, worker_env, home, redis_url)
    yield worker
    worker.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def no_model_worker(
    worker_env: dict[str, str], redis_url: str, home: Path
) -> Iterator[WorkerProcess]:
    worker = start_worker(
        NO_MODEL_WORKER,
        {**worker_env, "WORKER_MODEL": "missing"},
        home,
        redis_url,
        wait_state="no_model",
    )
    yield worker
    worker.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def record(client: redis.Redis, name: str) -> WorkerInfo:
    [info] = [w for w in live_workers(client) if w.name == name]
    return info


# --- a primary with missing files: the worker serves the fallback -----------


def test_worker_falls_back_to_tiny_sd_and_records_why(
    fallback_worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    info = record(redis_client, FALLBACK_WORKER)

    assert info.state == "ready"
    assert info.model == "tiny-sd"
    assert info.device == "cpu"
    assert info.queues == ["darkroom.model.tiny-sd", "darkroom.default"]
    [failure] = info.failures
    assert failure.model == "missing"
    assert "model files missing" in failure.reason
    assert "not-there" in failure.reason
    log = fallback_worker.log_path.read_text(errors="replace")
    assert "model missing failed to load" in log
    assert "serving tiny-sd" in log


def test_models_shows_the_fallback_as_current(
    fallback_worker: WorkerProcess, client: TestClient
) -> None:
    models = client.get("/models").json()

    assert models["primary"] == "missing"
    assert models["current"] == "tiny-sd"
    assert models["fallback_chain"] == ["tiny-sd"]
    assert models["served"] == {"tiny-sd": 1}
    assert models["models"]["tiny-sd"]["workers"] == 1
    assert models["models"]["missing"]["workers"] == 0
    [failure] = models["load_failures"][FALLBACK_WORKER]
    assert failure["model"] == "missing"
    assert "model files missing" in failure["reason"]


def test_a_job_without_a_model_runs_on_the_fallback(
    fallback_worker: WorkerProcess, client: TestClient
) -> None:
    job = submit(client, prompt="fallback please", seed=5)
    assert job["model"] == "missing"
    assert job["queue"] == "darkroom.default"

    done = wait_for(client, job["id"])

    assert done["status"] == "succeeded", done["error"]
    assert done["model"] == "missing"
    assert done["model_used"] == "tiny-sd"
    assert done["worker"] == FALLBACK_WORKER
    [image] = done["images"]
    # The job's params come from its model's entry ("missing": 64x64).
    assert (image["width"], image["height"], image["seed"]) == (64, 64, 5)
    assert client.get(image["url"].removeprefix("http://testserver")).status_code == 200


# --- every model fails: the worker stays up with no model --------------------


def test_worker_with_no_loadable_model_stays_up_as_no_model(
    no_model_worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    info = record(redis_client, NO_MODEL_WORKER)

    assert no_model_worker.proc.poll() is None
    assert info.state == "no_model"
    assert info.model is None
    assert info.queues == [f"darkroom.idle.{NO_MODEL_WORKER}"]
    assert [f.model for f in info.failures] == ["missing"]
    assert "model files missing" in info.failures[0].reason
    log = no_model_worker.log_path.read_text(errors="replace")
    assert NO_PIPELINE in log
    assert "CRITICAL" in log


def test_status_names_the_worker_that_has_no_model(
    no_model_worker: WorkerProcess, client: TestClient
) -> None:
    status = client.get("/status").json()

    problems = [p for p in status["problems"] if NO_MODEL_WORKER in p]
    assert len(problems) == 1, status["problems"]
    assert NO_PIPELINE in problems[0]
    assert "missing: model files missing" in problems[0]
    states = {w["name"]: w["state"] for w in status["workers"]}
    assert states[NO_MODEL_WORKER] == "no_model"


def test_a_job_for_the_unloadable_model_is_refused_naming_it(
    no_model_worker: WorkerProcess, fallback_worker: WorkerProcess, client: TestClient
) -> None:
    """Live workers, none of which can load "missing": a job for it would wait for
    ever, so it is refused at submit, naming the model and what is servable."""
    answer = client.post("/jobs", json={"prompt": "nobody serves this", "model": "missing"})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["field"]) == ("model_not_served", "model")
    assert "'missing'" in error["message"]
    assert "tiny-sd" in error["message"]
    assert no_model_worker.proc.poll() is None


def test_a_job_for_an_autoscaled_unloadable_model_stays_queued(
    no_model_worker: WorkerProcess, fallback_worker: WorkerProcess, settings: Settings
) -> None:
    """Marked autoscaled (its workers come on demand), it is accepted and waits: no live
    worker takes it, nor runs it on another model."""
    autoscaled = settings.model_copy(update={"autoscaled_models": "missing"})
    with TestClient(create_app(autoscaled)) as client:
        job = submit(client, prompt="nobody serves this yet", model="missing")
        assert job["queue"] == "darkroom.model.missing"

        # A job queued after it, which a live worker runs to the end: had any worker
        # consumed the unserved model's queue, it would have taken the earlier job too.
        later = submit(client, prompt="served after it")
        assert wait_for(client, later["id"])["status"] == "succeeded"
        polled = client.get(f"/jobs/{job['id']}").json()
        assert polled["status"] == "queued", polled
        assert polled["model_used"] is None, polled
        assert polled["attempts"] == 0, polled

        status = client.get("/status").json()
        assert status["models"]["missing"]["queued"] >= 1
        assert status["queues"]["darkroom.model.missing"] >= 1
    assert no_model_worker.proc.poll() is None
