"""Hires fix: a first pass at the base size, an upscale, and an image-to-image pass.

AUTOMATIC1111's "hires fix" (`enable_hr`), which its users turn on to get sizes
the model was not trained at without doubled heads: the first pass composes at
the model's own size, the upscale (of the latents, or of the decoded image)
makes room, and the second pass at `strength` adds the detail. This module is
its data (the request, the resolved plan, the upscalers): the API resolves a
job's plan (api.hires) and the worker runs it (worker.hires).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_SCALE = 2.0
# A1111's default "Denoising strength" for the second pass.
DEFAULT_STRENGTH = 0.7
MAX_SCALE = 4.0


@dataclass(frozen=True)
class LatentUpscaler:
    """An upscale of the latents by torch.nn.functional.interpolate."""

    mode: str
    antialias: bool = False


# A1111's latent upscale modes (GET /sdapi/v1/latent-upscale-modes), by name.
LATENT_UPSCALERS = {
    "Latent": LatentUpscaler("bilinear"),
    "Latent (antialiased)": LatentUpscaler("bilinear", antialias=True),
    "Latent (bicubic)": LatentUpscaler("bicubic"),
    "Latent (bicubic antialiased)": LatentUpscaler("bicubic", antialias=True),
    "Latent (nearest)": LatentUpscaler("nearest"),
    "Latent (nearest-exact)": LatentUpscaler("nearest-exact"),
}
# Weight-free upscalers of the decoded image (PIL). A1111's "None" resizes with Lanczos.
IMAGE_UPSCALERS = {"Lanczos": "LANCZOS", "Nearest": "NEAREST", "None": "LANCZOS"}
UPSCALERS = [*LATENT_UPSCALERS, *IMAGE_UPSCALERS]
# Flow models (flux, sd3) pack their latents: they are upscaled as images.
LATENT_TYPES = frozenset({"sd", "sdxl"})


class HiresFix(BaseModel):
    """`hires` of POST /jobs: upscale by `scale`, or to `width` and/or `height`."""

    model_config = ConfigDict(extra="forbid")

    scale: float | None = Field(
        None, ge=1, le=MAX_SCALE, description=f"Default {DEFAULT_SCALE:g} (without a size)."
    )
    width: int | None = Field(None, ge=8, le=8192)
    height: int | None = Field(None, ge=8, le=8192)
    steps: int | None = Field(
        None, ge=1, le=1000, description="Steps of the second pass; default: the job's steps."
    )
    strength: float = Field(
        DEFAULT_STRENGTH, gt=0, le=1, description="How much the second pass changes."
    )
    upscaler: str = Field(
        "Latent", max_length=64, description="One of " + ", ".join(UPSCALERS) + "."
    )

    @model_validator(mode="after")
    def _scale_or_size(self) -> HiresFix:
        if self.scale is not None and (self.width is not None or self.height is not None):
            raise ValueError("give scale, or width and/or height, not both")
        return self


class HiresParams(BaseModel):
    """A job's resolved hires fix: the final size and how to get there."""

    width: int
    height: int
    steps: int
    strength: float
    upscaler: str


def target_size(
    base: tuple[int, int], scale: float | None, width: int | None, height: int | None
) -> tuple[int, int]:
    """The final size, on the 8-pixel grid, as A1111 computes it: `base x scale`; or
    `width` and `height`, one of them alone keeping the base's aspect ratio."""
    base_w, base_h = base
    if width is None and height is None:
        factor = scale if scale is not None else DEFAULT_SCALE
        width, height = round(base_w * factor), round(base_h * factor)
    elif width is None:
        width = round(base_w * (height or base_h) / base_h)
    elif height is None:
        height = round(base_h * width / base_w)
    return _grid(width), _grid(height or base_h)


def cover_size(base: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The size the first pass is upscaled to before the centre crop to `target`:
    the base scaled by the larger ratio, so that it covers `target` (A1111 crops a
    size of another aspect ratio, never stretches)."""
    ratio = max(target[0] / base[0], target[1] / base[1])
    return max(target[0], _grid(round(base[0] * ratio))), max(
        target[1], _grid(round(base[1] * ratio))
    )


def _grid(value: int) -> int:
    return max(8, value - value % 8)
