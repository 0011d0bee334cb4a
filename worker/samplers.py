"""A job's sampler: the pipeline's scheduler swapped in for one call, then put back.

The worker serves one job at a time, so swapping the scheduler on the loaded
pipeline is safe; putting the model's own back in a `finally` means a job's
sampler never leaks into the next one, even when the job fails or is canceled.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import diffusers

from shared.errors import GenerationError
from shared.samplers import Sampler, find_sampler


@contextlib.contextmanager
def sampler_in_use(pipe: Any, name: str | None, model_type: str) -> Iterator[None]:
    """`pipe` runs with the sampler `name` inside the block (its own one when None)."""
    if name is None:
        yield
        return
    sampler = find_sampler(name, model_type)
    if sampler is None:
        raise GenerationError(f"sampler {name!r} does not apply to {model_type} models")
    own = pipe.scheduler
    pipe.scheduler = _scheduler(sampler, _frozen_config(own.config))
    try:
        yield
    finally:
        pipe.scheduler = own


def _frozen_config(config: Any) -> tuple[tuple[str, Any], ...]:
    # Hashable, so that the schedulers built from one model's config are cached.
    return tuple(sorted((k, _hashable(v)) for k, v in dict(config).items()))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=64)
def _scheduler(sampler: Sampler, config: tuple[tuple[str, Any], ...]) -> Any:
    """A scheduler for `sampler` from the model's scheduler config (its betas, timestep
    spacing, prediction type), as diffusers' own from_config swaps do.

    Cached: schedulers keep no state between calls that set_timesteps does not reset.
    """
    scheduler_class = getattr(diffusers, sampler.scheduler)
    return scheduler_class.from_config(dict(config), **sampler.options)
