"""What one pipeline call takes, without torch: a job's share of it and the step callback.

Both sides of the engine process use these (worker.inference runs them); the
worker's side must not need torch to launch the engine, which imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.jobs import GenerationParams

# Called after each denoising step with (steps done, steps in total). It may
# raise to stop the generation (cancel, deadline); the exception propagates.
StepCallback = Callable[[int, int], None]
# Called after each step, before the StepCallback, with (the pipeline, steps done,
# steps in total, the latents: one row per image): live previews (worker.previews).
LatentsHook = Callable[[Any, int, int, Any], None]


@dataclass(frozen=True)
class Request:
    """One job's share of a pipeline call."""

    params: GenerationParams
    init_image: bytes | None = None
    mask: bytes | None = None  # inpainting: white repaints, black keeps
    # The registry model to run it on (the worker's engine holds several).
    model: str | None = None
