"""End-to-end fixtures: real Celery worker processes, S3 over moto's server, the API."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import webuiapi
from fastapi.testclient import TestClient

from api.main import create_app
from darkroom import process_commands
from darkroom.processes import Child, spawn
from darkroom.stack import free_port
from shared.settings import Settings
from tests.conftest import E2E_DB, S3_BUCKET
from tests.support.processes import REPO_ROOT, ApiProcess, WorkerProcess, start_api, start_worker
from tests.support.receiver import Receiver

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"darkroom-e2e-webhook-secret-32by").decode()


@pytest.fixture(scope="session")
def e2e_redis_url(redis_base_url: str) -> str:
    url = f"{redis_base_url}/{E2E_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def e2e_env(e2e_redis_url: str, registry_file: Path, s3_endpoint: str) -> dict[str, str]:
    return {
        "REDIS_URL": e2e_redis_url,
        "MODEL_CONFIG": str(registry_file),
        "STORAGE_URL": f"s3://{S3_BUCKET}/e2e",
        "S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        "WEBHOOK_RETRY_DELAYS_S": "[0.3, 0.3, 0.3]",
    }


@pytest.fixture(scope="session")
def workers(
    e2e_env: dict[str, str], e2e_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, WorkerProcess]]:
    """Two real workers: one serving tiny-sd, one pinned to the flaky custom model."""
    logs = tmp_path_factory.mktemp("worker-logs")
    started = {
        "tiny-sd": start_worker(
            "e2e-tiny@test", {**e2e_env, "WORKER_MODEL": "tiny-sd"}, logs, e2e_redis_url
        ),
        "tiny-flaky": start_worker(
            "e2e-flaky@test", {**e2e_env, "WORKER_MODEL": "tiny-flaky"}, logs, e2e_redis_url
        ),
    }
    yield started
    for worker in started.values():
        worker.stop(signal.SIGTERM)


@pytest.fixture(scope="session")
def webhook_worker(
    e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Child]:
    """The light webhook worker, as `darkroom webhooks` runs it."""
    log_path = tmp_path_factory.mktemp("webhook-logs") / "webhooks.log"
    worker = spawn(
        "webhook worker",
        process_commands.webhook_worker("webhooks@test"),
        {**os.environ, "PYTHONPATH": str(REPO_ROOT), **e2e_env},
        REPO_ROOT,
        log_path,
    )
    worker.wait_until(
        lambda: "ready." in worker.log_text(),
        60,
        0.1,
        what=lambda: f"webhook worker ready:\n{worker.log_text()}",
    )
    yield worker
    worker.stop()


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def e2e_settings(e2e_env: dict[str, str]) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=e2e_env["REDIS_URL"],
        registry_path=Path(e2e_env["MODEL_CONFIG"]),
        storage_url=e2e_env["STORAGE_URL"],
        s3_endpoint_url=e2e_env["S3_ENDPOINT_URL"],
        public_base_url="http://testserver",
        webhook_secret=e2e_env["WEBHOOK_SECRET"],
        webhook_allow_private_networks=True,
    )


@pytest.fixture(scope="session")
def client(e2e_settings: Settings, workers: dict[str, WorkerProcess]) -> Iterator[TestClient]:
    with TestClient(create_app(e2e_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def api_server(
    e2e_env: dict[str, str],
    workers: dict[str, WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiProcess]:
    """The API over real HTTP (uvicorn) in front of the e2e workers: what the
    command line and the web page talk to."""
    server = start_api(e2e_env, tmp_path_factory.mktemp("api-logs") / "api.log", free_port())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def webui(api_server: ApiProcess) -> webuiapi.WebUIApi:
    """webuiapi's client of the e2e API, with tiny defaults (its own are 512x512, 20 steps)."""
    return webuiapi.WebUIApi(baseurl=f"{api_server.url}/sdapi/v1", sampler="Euler", steps=2)


@contextlib.contextmanager
def api_with_keys(
    e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, *keys: str
) -> Iterator[ApiProcess]:
    """Another API over HTTP in front of the e2e workers, with these API keys on."""
    env = {**e2e_env, "API_KEYS": ",".join(keys)}
    server = start_api(env, tmp_path_factory.mktemp("keyed-api") / "api.log", free_port())
    try:
        yield server
    finally:
        server.stop()
