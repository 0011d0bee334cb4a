"""A job's sampler and schedule: the pipeline's scheduler swapped in for one call, then put back.

The worker serves one job at a time, so swapping the scheduler on the loaded
pipeline is safe; putting the model's own back in a `finally` means a job's
sampler never leaks into the next one, even when the job fails or is canceled.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Any

import diffusers

from shared.errors import GenerationError
from shared.samplers import find_sampler, find_schedule


@contextlib.contextmanager
def sampler_in_use(
    pipe: Any, name: str | None, model_type: str, schedule: str | None = None
) -> Iterator[None]:
    """`pipe` runs with the sampler `name` (its own one when None) on the sigma
    `schedule` (the sampler's own when None) inside the block."""
    if name is None and schedule is None:
        yield
        return
    own = pipe.scheduler
    scheduler_class, options = type(own).__name__, {}
    if name is not None:
        sampler = find_sampler(name, model_type)
        if sampler is None:
            raise GenerationError(f"sampler {name!r} does not apply to {model_type} models")
        scheduler_class, options = sampler.scheduler, dict(sampler.options)
    options.update(_schedule_options(schedule, scheduler_class))
    pipe.scheduler = _scheduler(scheduler_class, _frozen(options), _frozen(dict(own.config)))
    try:
        yield
    finally:
        pipe.scheduler = own


def _schedule_options(name: str | None, scheduler_class: str) -> dict[str, Any]:
    if name is None:
        return {}
    schedule = find_schedule(name)
    if schedule is None:
        raise GenerationError(f"unknown scheduler {name!r}")
    # Checked on the class itself: a job naming no sampler runs the model's own
    # scheduler, which the API cannot see.
    accepted = inspect.signature(getattr(diffusers, scheduler_class).__init__).parameters
    missing = sorted(schedule.needs - set(accepted))
    if missing:
        raise GenerationError(
            f"scheduler {schedule.label!r} does not apply to {scheduler_class} "
            f"(it takes no {', '.join(missing)})"
        )
    return dict(schedule.options)


def _frozen(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    # Hashable, so that the schedulers built from one model's config are cached.
    return tuple(sorted((k, _hashable(v)) for k, v in config.items()))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=64)
def _scheduler(
    scheduler_class: str,
    options: tuple[tuple[str, Any], ...],
    config: tuple[tuple[str, Any], ...],
) -> Any:
    """A `scheduler_class` with `options` from the model's scheduler config (its betas,
    timestep spacing, prediction type), as diffusers' own from_config swaps do.

    Cached: schedulers keep no state between calls that set_timesteps does not reset.
    """
    return getattr(diffusers, scheduler_class).from_config(dict(config), **dict(options))
