"""Run one generation on a loaded model. Knows torch and diffusers, nothing of Celery or Redis."""

from __future__ import annotations

import gc
import inspect
import io
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from shared.errors import GenerationError
from shared.jobs import GenerationParams
from worker.loader import LoadedModel

# Called after each denoising step with (steps done, steps in total). It may
# raise to stop the generation (cancel, deadline); the exception propagates.
StepCallback = Callable[[int, int], None]


def generate(
    model: LoadedModel,
    params: GenerationParams,
    init_image: bytes | None = None,
    on_step: StepCallback | None = None,
) -> list[Image.Image]:
    """Generate `params.num_images` images; image i uses seed `params.seed + i`."""
    pipe = model.txt2img
    kwargs = _common_kwargs(model, params)
    if params.mode == "img2img":
        if model.img2img is None or init_image is None:
            raise GenerationError(f"model {model.name} cannot run image-to-image")
        pipe = model.img2img
        source = _load_init_image(init_image, params.width, params.height)
        kwargs.update(image=[source] * params.num_images, strength=params.strength)
    else:
        kwargs.update(width=params.width, height=params.height)
    if on_step is not None:
        kwargs["callback_on_step_end"] = _step_callback(on_step)
    with torch.inference_mode():
        output = pipe(**_supported(pipe, kwargs))
    return list(output.images)


def free_memory() -> None:
    """Return cached GPU memory after a failure (an OOM leaves the allocator full)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def seeded_generators(seed: int, count: int) -> list[torch.Generator]:
    # CPU generators make a seed give the same image on any device.
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(count)]


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _common_kwargs(model: LoadedModel, params: GenerationParams) -> dict[str, Any]:
    count = params.num_images
    kwargs: dict[str, Any] = {
        "prompt": [params.effective_prompt] * count,
        "num_inference_steps": params.steps,
        "guidance_scale": params.guidance_scale,
        "generator": seeded_generators(params.seed, count),
        "max_sequence_length": model.entry.params.max_tokens,
    }
    if params.negative_prompt:
        kwargs["negative_prompt"] = [params.negative_prompt] * count
    return kwargs


def _supported(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop arguments this pipeline's __call__ does not take (e.g. max_sequence_length on SD)."""
    accepted = _call_parameters(type(pipe))
    return {k: v for k, v in kwargs.items() if k in accepted}


def _call_parameters(cls: type) -> set[str]:
    # A subclass that wraps __call__(*args, **kwargs) takes what its parent takes.
    for klass in cls.__mro__:
        if "__call__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__call__"]).parameters.values()
        named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if named - {"self"}:
            return named
    return set()


def _step_callback(on_step: StepCallback) -> Callable[..., dict[str, Any]]:
    def callback(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        on_step(step + 1, int(getattr(pipe, "num_timesteps", 0)) or step + 1)
        return tensors

    return callback


def _load_init_image(data: bytes, width: int, height: int) -> Image.Image:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image
