"""Resolve a job request against its model's registry entry: defaults and limits."""

from __future__ import annotations

import secrets

from api.hires import resolve_hires
from api.images import DecodedImage
from shared.errors import InvalidRequest
from shared.jobs import MAX_SEED, GenerationParams, JobCreate
from shared.registry import ModelEntry
from shared.samplers import (
    UNAVAILABLE_SAMPLERS,
    UNAVAILABLE_SCHEDULES,
    find_sampler,
    find_schedule,
    sampler_names,
    schedule_applies,
    schedule_names,
)


def resolve_params(
    request: JobCreate,
    entry: ModelEntry,
    init_image: DecodedImage | None,
    mask: DecodedImage | None = None,
    model: str | None = None,
) -> GenerationParams:
    """Fill unset fields from the model's defaults and refuse what exceeds its limits
    (`model`: the entry's registry name, for the refusals)."""
    limits = entry.params
    _check_input_sizes(entry, init_image, mask)
    if mask is not None:
        _check_inpainting(entry, init_image, mask)
    elif init_image is not None and not limits.supports_i2i:
        raise InvalidRequest(
            "this model does not support image-to-image (init_image)", "init_image"
        )
    if request.strength is not None and init_image is None:
        raise InvalidRequest("strength applies only with init_image", "strength")

    width, height = _resolve_size(request, entry, init_image, model)
    steps = request.steps if request.steps is not None else limits.default_steps
    if steps > limits.max_steps:
        raise InvalidRequest(
            f"steps {steps} exceeds this model's max_steps {limits.max_steps}", "steps"
        )

    negative_prompt = _resolve_negative_prompt(request, entry)
    sampler = resolve_sampler(request.sampler, entry)
    return GenerationParams(
        prompt=request.prompt,
        negative_prompt=negative_prompt,
        width=width,
        height=height,
        steps=steps,
        guidance_scale=(
            request.guidance_scale if request.guidance_scale is not None else limits.guidance_scale
        ),
        seed=request.seed if request.seed is not None else secrets.randbelow(MAX_SEED + 1),
        num_images=request.num_images,
        source_seed=request.source_seed,
        strength=_strength(request, init_image, mask),
        mode="inpaint" if mask is not None else "img2img" if init_image is not None else "txt2img",
        sampler=sampler,
        scheduler=resolve_schedule(request.scheduler, sampler, entry),
        hires=resolve_hires(request.hires, entry, (width, height), steps, init_image is not None),
        tiling=request.tiling,
    )


def resolve_sampler(name: str | None, entry: ModelEntry) -> str | None:
    """The job's sampler by its canonical A1111 name (the model's default when unnamed)."""
    wanted = name if name is not None else entry.params.default_sampler
    if wanted is None:
        return None
    sampler = find_sampler(wanted, entry.type)
    if sampler is None and wanted.strip() in UNAVAILABLE_SAMPLERS:
        raise InvalidRequest(
            f"sampler {wanted!r} has no diffusers counterpart and is not available in "
            f"darkroom; known: " + ", ".join(sampler_names(entry.type)),
            "sampler",
        )
    if sampler is None:
        raise InvalidRequest(
            f"unknown sampler {wanted!r} for {entry.type} models; known: "
            + ", ".join(sampler_names(entry.type)),
            "sampler",
        )
    return sampler.name


def resolve_schedule(name: str | None, sampler: str | None, entry: ModelEntry) -> str | None:
    """The job's sigma schedule by its A1111 id; None for the sampler's own ("Automatic").

    Checked against the sampler where the job names one (or the model has a
    default); with the model's own scheduler the worker checks it, as only it
    knows that scheduler's class.
    """
    if name is None:
        return None
    schedule = find_schedule(name)
    if schedule is None:
        why = "has no diffusers counterpart" if name.strip() in UNAVAILABLE_SCHEDULES else "unknown"
        raise InvalidRequest(
            f"scheduler {name!r}: {why}; known: " + ", ".join(schedule_names()), "scheduler"
        )
    if not schedule.options:
        return None
    found = find_sampler(sampler, entry.type) if sampler is not None else None
    if found is not None and not schedule_applies(schedule, found.scheduler):
        raise InvalidRequest(
            f"scheduler {schedule.label!r} does not apply to sampler {found.name!r} "
            f"({found.scheduler} takes no {', '.join(sorted(schedule.needs))})",
            "scheduler",
        )
    return schedule.name


def _strength(
    request: JobCreate, init_image: DecodedImage | None, mask: DecodedImage | None
) -> float | None:
    if init_image is None:
        return None
    if request.strength is not None:
        return request.strength
    # Inpainting repaints the masked area from scratch by default, as A1111's
    # "denoising strength" 1.0 for inpainting does; img2img keeps more of its input.
    return 1.0 if mask is not None else 0.75


def _check_input_sizes(
    entry: ModelEntry, init_image: DecodedImage | None, mask: DecodedImage | None
) -> None:
    """Input images within the model's max_size: an inpainted image keeps its input's
    size, so bounding the input bounds the work and the output (and a 4096x4096
    input on a 512 model would cost minutes of a GPU for nothing it can do well)."""
    max_w, max_h = entry.params.max_size
    for field, image in (("init_image", init_image), ("mask_image", mask)):
        if image is not None and (image.width > max_w or image.height > max_h):
            raise InvalidRequest(
                f"{field} is {image.width}x{image.height}; this model takes at most "
                f"{max_w}x{max_h} (its max_size): scale the image down first",
                field,
            )


def _check_inpainting(
    entry: ModelEntry, init_image: DecodedImage | None, mask: DecodedImage
) -> None:
    if init_image is None:
        raise InvalidRequest("mask_image needs the init_image it masks", "mask_image")
    if not entry.params.supports_inpainting:
        raise InvalidRequest(
            "this model does not support inpainting (mask_image; registry: supports_inpainting)",
            "mask_image",
        )
    if (mask.width, mask.height) != (init_image.width, init_image.height):
        raise InvalidRequest(
            f"mask_image is {mask.width}x{mask.height}; it must be the size of init_image "
            f"({init_image.width}x{init_image.height})",
            "mask_image",
        )


def _resolve_size(
    request: JobCreate, entry: ModelEntry, init_image: DecodedImage | None, model: str | None
) -> tuple[int, int]:
    default_w, default_h = entry.params.default_size
    if init_image is not None:
        # (An inpainted image comes back at the input's own size: see worker.inpaint.)
        # img2img keeps the input's size by default, rounded down to the 8-pixel grid.
        default_w, default_h = init_image.width // 8 * 8, init_image.height // 8 * 8
    width = request.width if request.width is not None else default_w
    height = request.height if request.height is not None else default_h
    for field, value in (("width", width), ("height", height)):
        if value % 8:
            raise InvalidRequest(f"{field} {value} must be a multiple of 8", field)
        if value < 8:
            raise InvalidRequest(f"{field} must be at least 8", field)
    max_w, max_h = entry.params.max_size
    for field, value, limit in (("width", width, max_w), ("height", height, max_h)):
        if value > limit:
            # Both dimensions and the model: the message reads right whether the client
            # sent width and height (darkroom, A1111) or one `size` (OpenAI).
            whose = f"{model}'s" if model else "this model's"
            raise InvalidRequest(
                f"size {width}x{height} is over {whose} maximum of {max_w}x{max_h} "
                f"(max_size): its {field} is {value}, at most {limit}",
                field,
            )
    return width, height


def _resolve_negative_prompt(request: JobCreate, entry: ModelEntry) -> str | None:
    if not entry.params.use_negative_prompt:
        if request.negative_prompt:
            raise InvalidRequest(
                "this model does not use a negative prompt (use_negative_prompt: false)",
                "negative_prompt",
            )
        return None
    if request.negative_prompt is not None:
        return request.negative_prompt
    return entry.params.negative_prompt or None
