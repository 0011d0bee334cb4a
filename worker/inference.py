"""Run one generation on a loaded model. Knows torch and diffusers, nothing of Celery or Redis."""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from shared.errors import GenerationError
from shared.jobs import GenerationParams
from shared.loras import ResolvedLora
from shared.png import encode_png
from worker.call_types import LatentsHook, Request, StepCallback
from worker.hires import hires_upscaler
from worker.inpaint import keep_unmasked, load_mask
from worker.loader import LoadedModel
from worker.samplers import sampler_in_use
from worker.tiling import tiling_in_use

__all__ = ["Request", "StepCallback", "encode_png", "generate", "generate_batch"]


def generate(
    model: LoadedModel,
    params: GenerationParams,
    init_image: bytes | None = None,
    on_step: StepCallback | None = None,
    mask: bytes | None = None,
) -> list[Image.Image]:
    """Generate `params.num_images` images; image i uses seed `params.seed + i`."""
    return generate_batch(model, [Request(params, init_image, mask)], on_step)[0]


def generate_batch(
    model: LoadedModel,
    requests: list[Request],
    on_step: StepCallback | None = None,
    on_latents: LatentsHook | None = None,
) -> list[list[Image.Image]]:
    """Run several jobs as one pipeline call: one list of images per request, in order.

    The requests must share mode, size, steps, guidance and strength (see
    worker.batching.BatchKey); each keeps its own prompt, negative prompt and
    seeded generators, so its images are the ones it would get alone (up to
    the float rounding of a larger batch). `on_latents` sees the latents after
    each step (live previews), before `on_step` does.
    """
    first = requests[0].params
    counts = [r.params.num_images for r in requests]
    kwargs: dict[str, Any] = {
        "prompt": _per_image([r.params.effective_prompt for r in requests], counts),
        "num_inference_steps": first.steps,
        "guidance_scale": first.guidance_scale,
        "generator": [
            g for r in requests for g in seeded_generators(r.params.seed, r.params.num_images)
        ],
        "max_sequence_length": model.entry.params.max_tokens,
    }
    if first.negative_prompt:
        kwargs["negative_prompt"] = _per_image([r.params.negative_prompt for r in requests], counts)
    hooks = StepHooks(on_step, on_latents)
    with adapters_in_use(model, first.loras):
        return _generate(model, requests, kwargs, counts, hooks)


@contextlib.contextmanager
def adapters_in_use(model: LoadedModel, loras: list[ResolvedLora]) -> Iterator[None]:
    """Exactly `loras` active during the call, at their scales. They stay loaded after
    it: the next call activates its own (none: all off, the base model's computation),
    so a run of jobs with the same adapters switches nothing."""
    if model.adapters is None:
        if loras:
            raise GenerationError(f"model {model.name} takes no LoRA adapters")
    else:
        try:
            model.adapters.activate(loras)
        except Exception:
            model.adapters.deactivate()  # a half-made switch: start the next one clean
            raise
    yield


def _generate(
    model: LoadedModel,
    requests: list[Request],
    kwargs: dict[str, Any],
    counts: list[int],
    hooks: StepHooks,
) -> list[list[Image.Image]]:
    first = requests[0].params
    if first.mode == "inpaint":
        return _inpaint(model, requests[0], kwargs, hooks.callback())
    pipe = model.txt2img
    if first.mode == "img2img":
        if model.img2img is None or any(r.init_image is None for r in requests):
            raise GenerationError(f"model {model.name} cannot run image-to-image")
        pipe = model.img2img
        sources = [
            _load_init_image(r.init_image or b"", first.width, first.height) for r in requests
        ]
        length = steps_for_strength(first.steps, first.strength)
        kwargs.update(
            image=_per_image(sources, counts),
            num_inference_steps=length,
            strength=strength_for_schedule(length, first.strength),
        )
    elif first.hires is not None:
        images = _hires(model, requests, kwargs, hooks)
        return _split(images, counts)
    else:
        kwargs.update(width=first.width, height=first.height)
    images = _call(pipe, kwargs, model, first, hooks.callback())
    return _split(images, counts)


def _split(images: list[Image.Image], counts: list[int]) -> list[list[Image.Image]]:
    """Each request's images, in order, from one call's."""
    split, start = [], 0
    for count in counts:
        split.append(images[start : start + count])
        start += count
    return split


def _call(
    pipe: Any,
    kwargs: dict[str, Any],
    model: LoadedModel,
    params: GenerationParams,
    callback: DiffusersCallback | None,
) -> Any:
    """One pipeline call with the job's sampler, schedule and tiling; its images (or
    latents, with output_type="latent")."""
    if callback is not None:
        kwargs["callback_on_step_end"] = callback
    in_use = sampler_in_use(pipe, params.sampler, model.entry.type, params.scheduler)
    with torch.inference_mode(), in_use, tiling_in_use(pipe, params.tiling):
        output = pipe(**_supported(pipe, kwargs))
    if kwargs.get("output_type") == "latent":
        return output.images
    return list(output.images)


def _hires(
    model: LoadedModel, requests: list[Request], kwargs: dict[str, Any], hooks: StepHooks
) -> list[Image.Image]:
    """Hires fix: the first pass at the job's size, the upscale, the second pass."""
    params = requests[0].params
    plan = params.hires
    if plan is None or model.img2img is None:
        raise GenerationError(f"model {model.name} cannot run the hires fix (no image-to-image)")
    length = steps_for_strength(plan.steps, plan.strength)
    strength = strength_for_schedule(length, plan.strength)
    second_steps = max(1, int(length * (strength or 1)))
    upscaler = hires_upscaler(plan.upscaler)
    first = dict(kwargs, width=params.width, height=params.height)
    if upscaler.latent:
        first["output_type"] = "latent"
    made = _call(model.txt2img, first, model, params, hooks.callback(after=second_steps))
    base, target = (params.width, params.height), (plan.width, plan.height)
    second = dict(
        kwargs,
        image=upscaler.upscale(made, base, target, model.txt2img),
        num_inference_steps=length,
        strength=strength,
        # Fresh generators on the same seeds: the second pass's noise is the seed's too.
        generator=[
            g for r in requests for g in seeded_generators(r.params.seed, r.params.num_images)
        ],
    )
    images: list[Image.Image] = _call(
        model.img2img, second, model, params, hooks.callback(before=params.steps)
    )
    return images


def _inpaint(
    model: LoadedModel, request: Request, kwargs: dict[str, Any], callback: DiffusersCallback | None
) -> list[list[Image.Image]]:
    """One inpainting job (never batched): repaint the mask, keep the rest exactly."""
    params = request.params
    if model.inpaint is None or request.init_image is None or request.mask is None:
        raise GenerationError(f"model {model.name} cannot inpaint")
    source = Image.open(io.BytesIO(request.init_image)).convert("RGB")
    mask = load_mask(request.mask, source.size)
    size = (params.width, params.height)
    work_source = source if source.size == size else source.resize(size, Image.Resampling.LANCZOS)
    work_mask = mask if mask.size == size else mask.resize(size, Image.Resampling.NEAREST)
    length = steps_for_strength(params.steps, params.strength)
    kwargs.update(
        image=work_source,
        mask_image=work_mask,
        num_inference_steps=length,
        strength=strength_for_schedule(length, params.strength),
        width=params.width,
        height=params.height,
    )
    images = _call(model.inpaint, kwargs, model, params, callback)
    return [[keep_unmasked(image, source, mask) for image in images]]


# The longest schedule steps_for_strength makes: schedulers refuse more steps
# than their training timesteps (1000 for SD, SDXL, SD3 and FLUX).
MAX_SCHEDULE_STEPS = 1000


def steps_for_strength(steps: int, strength: float | None) -> int:
    """The schedule length that makes an image-to-image call run at least one step.

    diffusers runs int(steps x strength) of a `steps`-long schedule: 3 steps at
    0.2 would run none and fail ("cannot reshape tensor of 0 elements"). A1111
    runs one step then, and so does darkroom, on the shortest schedule whose
    strength share is a whole step (its last, least noisy step: as close to the
    asked strength as one step gets). Otherwise the job's steps are kept as asked.
    Below 1/MAX_SCHEDULE_STEPS the step is that of strength 1/MAX_SCHEDULE_STEPS.
    """
    if strength is None or int(steps * strength) >= 1:
        return steps
    length = max(steps, math.ceil(1 / strength))
    while int(length * strength) < 1 and length < MAX_SCHEDULE_STEPS:
        length += 1  # float rounding: 1 / 0.3 * 0.3 may fall short
    return min(length, MAX_SCHEDULE_STEPS)


def strength_for_schedule(length: int, strength: float | None) -> float | None:
    """`strength`, raised where needed so that a `length`-step schedule runs one step."""
    if strength is None or int(length * strength) >= 1:
        return strength
    return 1 / length + 1e-9


def _per_image(values: list[Any], counts: list[int]) -> list[Any]:
    """One entry per image: each request's value repeated num_images times."""
    return [value for value, count in zip(values, counts, strict=True) for _ in range(count)]


def seeded_generators(seed: int, count: int) -> list[torch.Generator]:
    # CPU generators make a seed give the same image on any device.
    return [torch.Generator("cpu").manual_seed(seed + i) for i in range(count)]


def _supported(pipe: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop arguments this pipeline's __call__ does not take (e.g. max_sequence_length on SD)."""
    pipe_class: type = type(pipe)
    accepted = _call_parameters(pipe_class)
    return {k: v for k, v in kwargs.items() if k in accepted}


@functools.cache  # per class: inspecting a signature on every call costs ~0.1 ms
def _call_parameters(cls: type) -> frozenset[str]:
    # A subclass that wraps __call__(*args, **kwargs) takes what its parent takes.
    for klass in cls.__mro__:
        if "__call__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__call__"]).parameters.values()
        named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if named - {"self"}:
            return frozenset(named)
    return frozenset()


# diffusers' callback_on_step_end: (pipe, step, timestep, tensors) -> tensors.
DiffusersCallback = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class StepHooks:
    """What sees each step of a job's calls: progress, and the latents (live previews)."""

    on_step: StepCallback | None = None
    on_latents: LatentsHook | None = None

    def callback(self, before: int = 0, after: int = 0) -> DiffusersCallback | None:
        """diffusers' step callback for one call of a job made of several (hires fix):
        `before` steps ran in earlier calls and `after` follow, so the job's progress
        counts all of them."""
        on_step, on_latents = self.on_step, self.on_latents
        if on_step is None and on_latents is None:
            return None

        def callback(
            pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            ran = int(getattr(pipe, "num_timesteps", 0)) or step + 1
            done, total = before + step + 1, before + ran + after
            if on_latents is not None:
                on_latents(pipe, done, total, tensors["latents"])
            if on_step is not None:
                on_step(done, total)
            return tensors

        return callback


def _load_init_image(data: bytes, width: int, height: int) -> Image.Image:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image
