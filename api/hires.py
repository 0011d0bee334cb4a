"""Resolve a job's hires fix against its model: the final size within its limits."""

from __future__ import annotations

from shared.errors import InvalidRequest
from shared.hires import (
    IMAGE_UPSCALERS,
    LATENT_TYPES,
    LATENT_UPSCALERS,
    UPSCALERS,
    HiresFix,
    HiresParams,
    target_size,
)
from shared.registry import ModelEntry


def resolve_hires(
    hires: HiresFix | None,
    entry: ModelEntry,
    base: tuple[int, int],
    steps: int,
    image_input: bool,
) -> HiresParams | None:
    if hires is None:
        return None
    if image_input:
        raise InvalidRequest("hires applies to text-to-image jobs only", "hires")
    if not entry.params.supports_i2i:
        raise InvalidRequest(
            "hires needs a model that runs image-to-image (supports_i2i): its second pass is one",
            "hires",
        )
    if hires.upscaler not in UPSCALERS:
        raise InvalidRequest(
            f"hires upscaler {hires.upscaler!r} is not available; darkroom has: "
            + ", ".join(UPSCALERS),
            "hires.upscaler",
        )
    if hires.upscaler in LATENT_UPSCALERS and entry.type not in LATENT_TYPES:
        raise InvalidRequest(
            f"{entry.type} models pack their latents: use an image upscaler ("
            + ", ".join(IMAGE_UPSCALERS)
            + ")",
            "hires.upscaler",
        )
    width, height = target_size(base, hires.scale, hires.width, hires.height)
    max_w, max_h = entry.params.max_size
    if width > max_w or height > max_h:
        raise InvalidRequest(
            f"hires size {width}x{height} exceeds this model's max_size {max_w}x{max_h}",
            "hires",
        )
    second = hires.steps if hires.steps is not None else steps
    if second > entry.params.max_steps:
        raise InvalidRequest(
            f"hires steps {second} exceeds this model's max_steps {entry.params.max_steps}",
            "hires.steps",
        )
    return HiresParams(
        width=width,
        height=height,
        steps=second,
        strength=hires.strength,
        upscaler=hires.upscaler,
    )
