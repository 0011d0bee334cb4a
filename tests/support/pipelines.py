"""Custom pipeline classes that tests add to a registry through YAML alone."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
import torch
from diffusers import StableDiffusionPipeline

SLOW_STEP_S = 0.2


def steps_key(prompt: str) -> str:
    return f"test:steps:{prompt}"


CALLS_KEY = "test:pipeline-calls"


class FlakyPipeline(StableDiffusionPipeline):
    """A Stable Diffusion pipeline that misbehaves on purpose when a prompt asks it to.

    Every call is logged (its prompts, as JSON) to the Redis list CALLS_KEY
    (of the Redis at REDIS_URL, when set), so
    a test can count pipeline calls and see which jobs shared one. When any
    prompt of the call contains:
    - "raise": raises before generating;
    - "slow": every denoising step takes SLOW_STEP_S longer, and each finished
      step is appended to the Redis list `test:steps:<that prompt>`, so a test
      can see exactly how many steps ran;
    - "oom": raises torch.cuda.OutOfMemoryError, as a GPU out of memory does;
    - "crash": the whole worker process dies at once, as on an OOM kill.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        prompt = kwargs.get("prompt") or (args[0] if args else "")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if "REDIS_URL" in os.environ:
            _client().rpush(CALLS_KEY, json.dumps(prompts))
        if _any("raise", prompts):
            raise RuntimeError("the flaky pipeline raised on purpose")
        if _any("oom", prompts):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if _any("crash", prompts):
            os._exit(137)
        slow = _any("slow", prompts)
        if slow:
            kwargs["callback_on_step_end"] = _slow_steps(slow, kwargs.get("callback_on_step_end"))
        return super().__call__(*args, **kwargs)


def pipeline_calls(client: redis.Redis, marker: str) -> list[list[str]]:
    """The prompts of every logged call that had a prompt containing `marker`."""
    raw: list[bytes] = client.lrange(CALLS_KEY, 0, -1)  # type: ignore[assignment]
    calls = [json.loads(entry) for entry in raw]
    return [call for call in calls if _any(marker, call)]


def _any(word: str, prompts: list[str]) -> str | None:
    return next((p for p in prompts if word in p), None)


def _client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _slow_steps(prompt: str, inner: Any) -> Any:
    client = _client()

    def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        time.sleep(SLOW_STEP_S)
        client.rpush(steps_key(prompt), step)
        return inner(pipe, step, timestep, tensors) if inner else tensors

    return callback


# How long SlowLoadingPipeline takes to load: long enough for a test to act while
# the model loads (cancel the job, kill the worker).
SLOW_LOAD_S = 4.0


class SlowLoadingPipeline(StableDiffusionPipeline):
    """The tiny pipeline, SLOW_LOAD_S slower to load (a big checkpoint's load)."""

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW_LOAD_S)
        return super().from_pretrained(*args, **kwargs)
