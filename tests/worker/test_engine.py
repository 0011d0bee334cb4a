"""Both engines (the engine process, the in-process engine thread) on a real tiny
pipeline, through one interface: what a call returns, when it starts, how it stops
(a stop from the worker, a cancel between two steps), withdrawal."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from shared.cancel import request_cancel
from shared.registry import Registry
from tests.support.pipelines import pipeline_calls, steps_key
from tests.support.polling import wait_until
from tests.worker.conftest import flaky_params
from worker import inference
from worker.engine import InlineEngine, ProcessEngine
from worker.loader import load_first_available
from worker.outcomes import is_out_of_memory
from worker.stopping import JobStopped

# The engine process loads the model.
pytestmark = pytest.mark.slow

Engine = ProcessEngine | InlineEngine


def _request(prompt: str, **overrides: object) -> inference.Request:
    return inference.Request(flaky_params(prompt, **overrides))


def _slow(steps: int = 10) -> tuple[str, inference.Request]:
    prompt = f"slow {uuid.uuid4().hex[:8]}"
    return prompt, _request(prompt, steps=steps)


def test_a_call_returns_the_images_this_process_would_make(
    engine: Engine, registry: Registry
) -> None:
    request = _request("a lighthouse at dusk", seed=7, num_images=2)
    local, _ = load_first_available(registry, ["tiny-flaky"], "cpu", None)
    assert local is not None

    call = engine.submit([request])
    (images,) = call.result()

    (expected,) = inference.generate_batch(local, [request])
    assert call.started.is_set()
    assert call.seconds is not None
    assert call.seconds > 0
    # The same seeds give the same images, up to float rounding (the engine runs
    # torch on one thread, this process on several).
    assert len(images) == len(expected) == 2
    for got, want in zip(images, expected, strict=True):
        difference = np.abs(np.asarray(got, dtype=int) - np.asarray(want, dtype=int))
        assert difference.max() <= 8
        assert difference.mean() < 1


def test_every_step_is_reported_in_order(engine: Engine) -> None:
    seen: list[tuple[int, int]] = []

    engine.submit([_request("count my steps", steps=4)], on_step=lambda d, t: seen.append((d, t)))
    engine.wait_idle()

    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_step_callback_that_stops_ends_the_call(
    engine: Engine, engine_redis: redis.Redis
) -> None:
    prompt, request = _slow()

    def stop_at_two(done: int, total: int) -> None:
        if done >= 2:
            raise JobStopped(None)

    call = engine.submit([request], on_step=stop_at_two)

    with pytest.raises(JobStopped):
        call.result()
    assert 2 <= engine_redis.llen(steps_key(prompt)) < 10


def test_a_cancel_stops_the_call_before_another_step(
    engine: Engine, engine_redis: redis.Redis
) -> None:
    if not engine.checks_cancels:
        pytest.skip("the in-process engine's step callback checks cancels (StepMonitor)")
    prompt, request = _slow()
    call = engine.submit([request], cancel_ids=("job-to-cancel",))
    wait_until(lambda: engine_redis.llen(steps_key(prompt)) >= 1, timeout_s=30, interval_s=0.02)

    request_cancel(engine_redis, "job-to-cancel", ttl_s=60)
    ran_before_cancel = engine_redis.llen(steps_key(prompt))

    with pytest.raises(JobStopped):
        call.result()
    # The step in flight finishes; no other step runs.
    assert engine_redis.llen(steps_key(prompt)) <= ran_before_cancel + 1


def test_a_withdrawn_call_never_runs_and_a_started_one_cannot_be_withdrawn(
    engine: Engine, engine_redis: redis.Redis
) -> None:
    _, running = _slow(steps=3)
    first = engine.submit([running])
    marker = f"never run {uuid.uuid4().hex[:8]}"
    waiting = engine.submit([_request(marker)])
    wait_until(first.started.is_set, timeout_s=30)

    assert engine.withdraw(waiting) is True
    assert engine.withdraw(first) is False
    first.result()
    after = engine.submit([_request("after the withdrawn one")])
    after.result()

    assert not waiting.started.is_set()
    assert pipeline_calls(engine_redis, marker) == []


def test_a_failed_call_raises_the_pipelines_error_here(engine: Engine) -> None:
    with pytest.raises(RuntimeError, match="raised on purpose"):
        engine.submit([_request("raise please")]).result()
    with pytest.raises(Exception, match="CUDA out of memory") as oom:
        engine.submit([_request("oom please")]).result()
    assert is_out_of_memory(oom.value)
    # The engine serves on.
    assert len(engine.submit([_request("fine again")]).result()[0]) == 1


def test_a_call_the_worker_stops_ends_with_no_images(
    engine: Engine, engine_redis: redis.Redis
) -> None:
    prompt, request = _slow()
    call = engine.submit([request])
    wait_until(lambda: engine_redis.llen(steps_key(prompt)) >= 1, timeout_s=30, interval_s=0.02)
    engine.stop(call)
    with pytest.raises(JobStopped):
        call.result()
    assert engine_redis.llen(steps_key(prompt)) < 10
    assert not engine.busy
