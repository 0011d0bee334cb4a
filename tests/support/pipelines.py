"""Custom pipeline classes that tests add to a registry through YAML alone."""

from __future__ import annotations

import os
import time
from typing import Any

import redis
import torch
from diffusers import StableDiffusionPipeline

SLOW_STEP_S = 0.2


def steps_key(prompt: str) -> str:
    return f"test:steps:{prompt}"


class FlakyPipeline(StableDiffusionPipeline):
    """A Stable Diffusion pipeline that misbehaves on purpose when the prompt asks it to.

    - "raise" in the prompt: raises before generating;
    - "slow" in the prompt: every denoising step takes SLOW_STEP_S longer, and
      each finished step is appended to the Redis list `test:steps:<prompt>`, so
      a test can see exactly how many steps ran;
    - "oom": raises torch.cuda.OutOfMemoryError, as a GPU out of memory does;
    - "crash": the whole worker process dies at once, as on an OOM kill.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        prompt = kwargs.get("prompt") or (args[0] if args else "")
        first = prompt if isinstance(prompt, str) else prompt[0]
        if "raise" in first:
            raise RuntimeError("the flaky pipeline raised on purpose")
        if "oom" in first:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if "crash" in first:
            os._exit(137)
        if "slow" in first:
            kwargs["callback_on_step_end"] = _slow_steps(first, kwargs.get("callback_on_step_end"))
        return super().__call__(*args, **kwargs)


def _slow_steps(prompt: str, inner: Any) -> Any:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])

    def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        time.sleep(SLOW_STEP_S)
        client.rpush(steps_key(prompt), step)
        return inner(pipe, step, timestep, tensors) if inner else tensors

    return callback
