"""Fixtures that start real things: Redis, an S3 server (moto), tiny models, Celery workers."""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from darkroom import process_commands
from darkroom.stack import free_port, redis_server_binary
from shared.registry import Registry, load_registry
from shared.settings import Settings
from tests.support.processes import start_redis_server

# The end-to-end fixtures (workers, the webhook worker, the API on them) are
# global, so tests/e2e and tests/security share one set of processes per session.
pytest_plugins = ["tests.support.e2e_fixtures"]

S3_BUCKET = "darkroom-test"
# Databases of the test Redis: API tests flush theirs per test; the end-to-end
# tests share one with long-lived workers and never flush it mid-session.
API_DB = 14
E2E_DB = 13


# Directories whose every test starts processes: marked e2e (pyproject.toml's markers).
E2E_DIRECTORIES = {"e2e", "security"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        if item.path.relative_to(tests).parts[0] in E2E_DIRECTORIES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """The test Redis: REDIS_TEST_URL, the local server on 6379, or one started here."""
    url = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        yield url
        return
    except redis.ConnectionError:
        pass
    binary = redis_server_binary()
    if binary is None:
        pytest.exit("no Redis on 127.0.0.1:6379 and no redis-server to start", 2)
    port = free_port()
    data_dir = Path(tempfile.mkdtemp())
    argv = process_commands.redis_server(binary, port, data_dir)
    url = f"redis://127.0.0.1:{port}"
    server = start_redis_server(argv, data_dir / "redis.log", redis.Redis.from_url(url))
    yield url
    server.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Imported here, not at collection: worker.tiny imports torch (seconds), which
    # the tests that need no model should not wait for.
    from worker.tiny import ensure_tiny_sd

    return ensure_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


def write_registry(path: Path, tiny_dir: Path, primary: str = "tiny-sd", extra: str = "") -> Path:
    """Tiny models: tiny-sd, a flaky custom class (alone and batching), one with no files;
    `extra`: more model entries (YAML at any indentation), added under `models:`."""
    path.write_text(
        textwrap.dedent(
            f"""
            models:
              tiny-sd:
                id: "{tiny_dir}"
                type: sd
                preview_decoder: vae  # random weights: no fixed projection fits them
                params:
                  default_steps: 2
                  max_steps: 10
                  default_size: [64, 64]
                  max_size: [256, 256]
                  negative_prompt: "blurry"
                  supports_inpainting: true
              tiny-flaky: &flaky
                id: "{tiny_dir}"
                type: custom
                pipeline_class: "tests.support.pipelines:FlakyPipeline"
                preview_decoder: vae
                params:
                  default_steps: 2
                  max_steps: 50
                  default_size: [64, 64]
                  max_size: [128, 128]
                  supports_i2i: false
                  use_negative_prompt: false
              tiny-batch:  # tiny-flaky with dynamic batching on
                <<: *flaky
                max_batch_size: 4
                batch_window: 0.5
              missing:
                id: "{tiny_dir.parent / "not-there"}"
                type: sd
                params:
                  default_steps: 2
                  default_size: [64, 64]
                  max_size: [64, 64]
            """
        )
        + textwrap.indent(textwrap.dedent(extra).strip("\n") + "\n", "  ")
        + textwrap.dedent(
            f"""
            runtime:
              primary_model: {primary}
              fallback_models: [tiny-sd]
            """
        )
    )
    return path


@pytest.fixture(scope="session")
def registry_file(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    return write_registry(tmp_path_factory.mktemp("registry") / "models.yaml", tiny_model_dir)


@pytest.fixture(scope="session")
def registry(registry_file: Path) -> Registry:
    return load_registry(registry_file)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server over real HTTP, with an empty test bucket."""
    from moto.server import ThreadedMotoServer

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def make_settings(
    redis_base_url: str, registry_file: Path, tmp_path: Path
) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "redis_url": f"{redis_base_url}/{API_DB}",
            "registry_path": registry_file,
            "storage_url": f"file://{tmp_path / 'images'}",
            "public_base_url": "http://testserver",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@pytest.fixture
def api_redis(redis_base_url: str) -> redis.Redis:
    client = redis.Redis.from_url(f"{redis_base_url}/{API_DB}")
    client.flushdb()
    return client


@pytest.fixture
def api(make_settings: Callable[..., Settings], api_redis: redis.Redis) -> Iterator[TestClient]:
    """The API on a flushed test Redis database, with no worker behind it."""
    with TestClient(create_app(make_settings())) as client:
        yield client
