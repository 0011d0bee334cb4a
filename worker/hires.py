"""The hires fix's upscale between its two passes: of the latents, or of the images.

The first pass's output is scaled to cover the final size (the base's aspect
ratio kept) and centre-cropped to it, as A1111 does for a final size of another
aspect ratio. Latents are interpolated in the model's latent space (A1111's
"Latent" modes: soft, the second pass redraws the detail); images with PIL's
weight-free filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from shared.errors import GenerationError
from shared.hires import IMAGE_UPSCALERS, LATENT_UPSCALERS, cover_size


@dataclass(frozen=True)
class HiresUpscaler:
    name: str
    latent: bool

    def upscale(self, made: Any, base: tuple[int, int], target: tuple[int, int], pipe: Any) -> Any:
        """The first pass's output (latents, or a list of images) at `target`."""
        cover = cover_size(base, target)
        if self.latent:
            return _upscale_latents(made, cover, target, self.name, pipe)
        return [_upscale_image(image, cover, target, self.name) for image in made]


def hires_upscaler(name: str) -> HiresUpscaler:
    if name not in LATENT_UPSCALERS and name not in IMAGE_UPSCALERS:
        raise GenerationError(f"unknown hires upscaler {name!r}")
    return HiresUpscaler(name, latent=name in LATENT_UPSCALERS)


def _upscale_latents(
    latents: torch.Tensor, cover: tuple[int, int], target: tuple[int, int], name: str, pipe: Any
) -> torch.Tensor:
    if latents.ndim != 4:
        raise GenerationError("these latents are packed: use an image upscaler for hires")
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    upscaler = LATENT_UPSCALERS[name]
    options = {"antialias": True} if upscaler.antialias else {}
    scaled = torch.nn.functional.interpolate(
        latents, size=(cover[1] // factor, cover[0] // factor), mode=upscaler.mode, **options
    )
    width, height = target[0] // factor, target[1] // factor
    left, top = (scaled.shape[3] - width) // 2, (scaled.shape[2] - height) // 2
    return scaled[:, :, top : top + height, left : left + width]


def _upscale_image(
    image: Image.Image, cover: tuple[int, int], target: tuple[int, int], name: str
) -> Image.Image:
    resample = Image.Resampling[IMAGE_UPSCALERS[name]]
    scaled = image.resize(cover, resample)
    left, top = (cover[0] - target[0]) // 2, (cover[1] - target[1]) // 2
    return scaled.crop((left, top, left + target[0], top + target[1]))
