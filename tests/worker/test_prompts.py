"""Prompt optimisation against a local server speaking OpenAI's protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from api.params import resolve_params
from shared.constants import model_queue
from shared.jobs import JobCreate, JobRecord, JobStatus, utcnow
from shared.registry import PromptOptimization, registry_for
from shared.settings import Settings
from shared.storage import LocalStorage
from shared.store import JobStore
from tests.conftest import API_DB
from tests.support.fake_openai import FakeOpenAI
from tests.support.pipelines import pipeline_calls
from tests.support.runners import make_runner
from worker.batching import BatchPolicy
from worker.loader import load_model
from worker.prompts import PromptOptimizer, contains_korean
from worker.runner import JobRunner


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def optimizer_for(
    make_settings: Callable[..., Settings], fake_openai: FakeOpenAI
) -> Callable[..., PromptOptimizer]:
    def make(api_key: str | None = "sk-test", **config: bool) -> PromptOptimizer:
        # A long client timeout: a test that holds answers (FakeOpenAI.hold_until_in_flight)
        # must see the overlap, not a client that gave up on a busy machine.
        settings = make_settings(
            openai_api_key=api_key, openai_base_url=fake_openai.base_url, openai_timeout_s=120
        )
        return PromptOptimizer(PromptOptimization(**{"enabled": True, **config}), settings)

    return make


def test_disabled_optimisation_sends_nothing(optimizer_for, fake_openai: FakeOpenAI) -> None:
    assert optimizer_for(enabled=False).optimize("a cat", 77) is None
    assert fake_openai.requests == []


def test_without_an_api_key_prompts_are_used_as_given(optimizer_for, fake_openai) -> None:
    assert optimizer_for(api_key=None).optimize("a cat", 77) is None
    assert fake_openai.requests == []


def test_prompt_is_rewritten_within_the_model_token_limit(optimizer_for, fake_openai) -> None:
    assert optimizer_for().optimize("a cat", 77) == "optimized: a cat"

    [request] = fake_openai.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "gpt-4o-mini"
    system = request["body"]["messages"][0]["content"]
    assert "77 tokens" in system
    assert "translate" not in system


def test_korean_prompt_is_translated(optimizer_for, fake_openai) -> None:
    assert contains_korean("창가에 앉은 고양이")
    assert not contains_korean("a cat")
    assert optimizer_for().optimize("창가에 앉은 고양이", 77) == "a cat sitting on a windowsill"
    assert "translate it to English" in fake_openai.requests[0]["body"]["messages"][0]["content"]


def test_translation_and_length_limit_can_be_turned_off(optimizer_for, fake_openai) -> None:
    optimizer_for(translate_korean=False, max_length_by_model=False).optimize(
        "창가에 앉은 고양이", 77
    )
    system = fake_openai.requests[0]["body"]["messages"][0]["content"]
    assert "translate" not in system
    assert "tokens" not in system


def test_an_empty_prompt_is_not_sent_to_be_rewritten(optimizer_for, fake_openai) -> None:
    # An OpenAI variation has no prompt: GPT must not invent one.
    assert optimizer_for().optimize("", 77) is None
    assert fake_openai.requests == []


def test_a_failing_server_leaves_the_prompt_as_given(optimizer_for, fake_openai) -> None:
    fake_openai.fail_with = 500
    assert optimizer_for().optimize("a cat", 77) is None
    assert fake_openai.requests  # it was asked (and retried at most once)


def test_runner_generates_from_the_optimised_prompt_and_records_it(
    make_settings: Callable[..., Settings],
    optimizer_for: Callable[..., PromptOptimizer],
    api_redis: redis.Redis,
    tmp_path: Path,
) -> None:
    settings = make_settings()
    registry = registry_for(settings)
    model = load_model("tiny-sd", registry.models["tiny-sd"], registry.runtime.memory, "cpu")
    store = JobStore(api_redis, ttl_s=600)
    params = resolve_params(JobCreate(prompt="창가에 앉은 고양이", seed=1), model.entry, None)
    record = JobRecord(
        id="prompt-job",
        created_at=utcnow(),
        model="tiny-sd",
        queue="darkroom.default",
        params=params,
    )
    store.create(record)
    runner = make_runner(store, LocalStorage(tmp_path, "http://x"), model, prompts=optimizer_for())

    assert runner.run_jobs() == 1

    stored = store.get(record.id)
    assert stored.params.prompt == "창가에 앉은 고양이"
    assert stored.params.optimized_prompt == "a cat sitting on a windowsill"
    assert (tmp_path / "jobs/prompt-job/0.png").is_file()


def test_a_batch_optimises_its_prompts_at_once_and_generates_from_them(
    batching: tuple[JobRunner, JobStore], fake_openai: FakeOpenAI, api_redis: redis.Redis
) -> None:
    runner, store = batching
    for index in range(3):
        _queue(store, runner, f"batch-prompt-{index}", f"fox {index}")
    fake_openai.hold_until_in_flight = 3

    assert runner.run_jobs() == 3

    assert fake_openai.max_in_flight == 3  # the three calls overlapped
    [call] = pipeline_calls(api_redis, "optimized: fox")
    assert sorted(call) == ["optimized: fox 0", "optimized: fox 1", "optimized: fox 2"]
    for index in range(3):
        stored = store.get(f"batch-prompt-{index}")
        assert stored.status is JobStatus.SUCCEEDED
        assert stored.batch_size == 3
        assert stored.params.optimized_prompt == f"optimized: fox {index}"


def test_a_failed_batch_reruns_its_jobs_with_the_prompts_already_optimised(
    batching: tuple[JobRunner, JobStore], fake_openai: FakeOpenAI, api_redis: redis.Redis
) -> None:
    runner, store = batching
    for name in ("ok", "raise"):
        _queue(store, runner, f"rerun-{name}", f"rerun {name}")

    assert runner.run_jobs() == 2

    assert len(fake_openai.requests) == 2  # once per job, not again for the re-runs
    assert [len(call) for call in pipeline_calls(api_redis, "optimized: rerun")] == [2, 1, 1]
    assert store.get("rerun-raise").status is JobStatus.FAILED
    assert store.get("rerun-ok").params.optimized_prompt == "optimized: rerun ok"


@pytest.fixture
def batching(
    make_settings: Callable[..., Settings],
    optimizer_for: Callable[..., PromptOptimizer],
    api_redis: redis.Redis,
    redis_base_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> tuple[JobRunner, JobStore]:
    """A runner batching up to 4 images of the call-logging test model, optimising prompts."""
    monkeypatch.setenv("REDIS_URL", f"{redis_base_url}/{API_DB}")  # the test pipeline's call log
    registry = registry_for(make_settings())
    model = load_model("tiny-batch", registry.models["tiny-batch"], registry.runtime.memory, "cpu")
    store = JobStore(api_redis, ttl_s=600)
    runner = make_runner(
        store,
        LocalStorage(tmp_path, "http://x"),
        model,
        prompts=optimizer_for(),
        batching=BatchPolicy(max_images=4),
    )
    return runner, store


def _queue(store: JobStore, runner: JobRunner, job_id: str, prompt: str) -> None:
    model = runner.model
    params = resolve_params(JobCreate(prompt=prompt, seed=1), model.entry, None)
    store.create(
        JobRecord(
            id=job_id,
            created_at=utcnow(),
            model=model.name,
            queue=model_queue(model.name),
            params=params,
        )
    )
