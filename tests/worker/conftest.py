"""A worker's engine process on the flaky tiny model, shared by the tests that need one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import redis

from shared.jobs import GenerationParams
from shared.registry import Registry
from shared.settings import Settings
from tests.worker.test_inference import params
from worker.engine import InlineEngine, ProcessEngine
from worker.loader import LoadedModel, load_first_available
from worker.models import ModelSet

# The Redis database of the engine tests: the flaky pipeline's call and step logs,
# the cancel flags the engine reads, the runner's jobs.
ENGINE_DB = 7


@pytest.fixture(scope="session")
def engine_redis_url(redis_base_url: str) -> str:
    return f"{redis_base_url}/{ENGINE_DB}"


@pytest.fixture(scope="session")
def engine_redis(engine_redis_url: str) -> redis.Redis:
    client = redis.Redis.from_url(engine_redis_url)
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def engine_and_model(
    registry_file: Path, engine_redis_url: str, engine_redis: redis.Redis
) -> Iterator[tuple[ProcessEngine, LoadedModel]]:
    settings = Settings(
        redis_url=engine_redis_url,
        registry_path=registry_file,
        worker_model="tiny-flaky",
        device="cpu",
        torch_threads=1,
    )
    engine = ProcessEngine(settings, "engine@test")
    # The flaky pipeline logs its calls and slow steps to the Redis at REDIS_URL.
    with mock.patch.dict(os.environ, {"REDIS_URL": engine_redis_url}):
        model, failures = engine.start()
    assert model is not None, failures
    assert model.name == "tiny-flaky"
    assert model.txt2img is None  # the pipelines stay in the engine process
    yield engine, model
    engine.close()


@pytest.fixture(scope="session")
def inline_engine(registry: Registry) -> Iterator[InlineEngine]:
    """The same model on an engine thread of this process (WORKER_ENGINE=inline)."""
    model, failures = load_first_available(registry, ["tiny-flaky"], "cpu", None)
    assert model is not None, failures
    engine = InlineEngine(ModelSet.holding(model))
    yield engine
    engine.close()


@pytest.fixture(params=["process", "inline"])
def engine(
    request: pytest.FixtureRequest,
    engine_and_model: tuple[ProcessEngine, LoadedModel],
    engine_redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> ProcessEngine | InlineEngine:
    """Each engine in turn: one interface, whichever a worker runs."""
    if request.param == "process":
        return engine_and_model[0]
    # The flaky pipeline logs its calls and slow steps to the Redis at REDIS_URL.
    monkeypatch.setenv("REDIS_URL", engine_redis_url)
    return request.getfixturevalue("inline_engine")  # type: ignore[no-any-return]


def flaky_params(prompt: str, **overrides: object) -> GenerationParams:
    """Parameters the flaky model takes (it has no negative prompt)."""
    return params(prompt=prompt, negative_prompt=None, **overrides)
