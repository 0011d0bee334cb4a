"""A1111's Extras upscaling, with the upscalers that need no weights: None, Lanczos, Nearest.

A1111's learned upscalers (ESRGAN, R-ESRGAN, SwinIR, LDSR, ScuNET) and its face
restorers need model weights and a GPU, and darkroom's GPUs are its workers',
generating: they are refused by name. What is left is a resize, done as A1111's
Extras does it (modules/upscaler.py, scripts/postprocessing_upscale.py):
"scale by" a factor, or "scale to" a size (by the factor that covers it, then
cropped to it, centred on black, when asked), the upscaled size rounded down
to the 8-pixel grid, a second upscaler blended in at its visibility. Pillow on
the API's CPU: callers run it in a thread, within EXTRAS_MAX_PIXELS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image

from api.compat.errors import FeatureUnavailable
from shared.errors import InvalidRequest
from shared.infotext import settings_line

NO_UPSCALER = "None"
# Each upscaler by its A1111 name: the Pillow filter it resizes with (None: none).
UPSCALERS: dict[str, Image.Resampling | None] = {
    NO_UPSCALER: None,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
# A1111 lists these upscalers with the scale its upscalers without a model report.
LISTED_SCALE = 4
# A1111 rounds an upscaled size down to a multiple of this.
GRID = 8
Size = tuple[int, int]


def check_upscaler(name: str, field: str) -> None:
    """Refuse (422) an upscaler not here, naming it and the available ones."""
    if name not in UPSCALERS:
        raise FeatureUnavailable(
            f"upscaler {name!r} is not available in darkroom (it has no upscaler models); "
            f"available: {', '.join(UPSCALERS)}",
            field,
        )


@dataclass(frozen=True)
class Upscale:
    """The Upscale step of an Extras call, in A1111's terms."""

    resize_mode: Literal[0, 1]  # 0: scale by `by`; 1: scale to `to`
    by: float
    to: Size
    crop: bool
    upscaler: str
    second: str
    second_visibility: float

    def __post_init__(self) -> None:
        check_upscaler(self.upscaler, "upscaler_1")
        check_upscaler(self.second, "upscaler_2")

    @property
    def does_anything(self) -> bool:
        return self.upscaler != NO_UPSCALER

    def made_sizes(self, size: Size) -> list[Size]:
        """The sizes of the images upscaling an image of `size` makes (the upscaled
        one, and the canvas it is cropped to); none when no upscaler is chosen."""
        if not self.does_anything:
            return []
        made = [_on_grid(size, self._factor(size))]
        if self._crops:
            made.append(self.to)
        return made

    def apply(self, image: Image.Image) -> tuple[Image.Image, str]:
        """The image upscaled, and A1111's record of it (its `postprocessing` text)."""
        if not self.does_anything:
            return image, ""
        info: dict[str, object] = {}
        if self.resize_mode == 1:
            info["Postprocess upscale to"] = f"{self.to[0]}x{self.to[1]}"
        else:
            info["Postprocess upscale by"] = self.by
        if self._crops:
            info["Postprocess crop to"] = f"{self.to[0]}x{self.to[1]}"
        info["Postprocess upscaler"] = self.upscaler
        result = self._resized(image, self.upscaler)
        if self.second != NO_UPSCALER and self.second_visibility > 0:
            second = self._resized(image, self.second)
            result = Image.blend(result, second.convert(result.mode), self.second_visibility)
            info["Postprocess upscaler 2"] = self.second
        return result, settings_line(info)

    @property
    def _crops(self) -> bool:
        return self.resize_mode == 1 and self.crop

    def _factor(self, size: Size) -> float:
        if self.resize_mode == 1:
            return max(self.to[0] / size[0], self.to[1] / size[1])
        return self.by

    def _resized(self, image: Image.Image, upscaler: str) -> Image.Image:
        resized = image.resize(_on_grid(image.size, self._factor(image.size)), UPSCALERS[upscaler])
        if not self._crops:
            return resized
        canvas = Image.new("RGB", self.to)
        left, top = self.to[0] // 2 - resized.width // 2, self.to[1] // 2 - resized.height // 2
        canvas.paste(resized, (left, top))
        return canvas


def check_size(upscale: Upscale, size: Size, max_pixels: int, field: str) -> int:
    """Refuse (422) an image whose upscale would pass `max_pixels` (or vanish): the
    pixels of the largest image it makes (0: none)."""
    largest = 0
    for width, height in upscale.made_sizes(size):
        made = f"upscaling {field} ({size[0]}x{size[1]}) would make an image of {width}x{height}"
        if width * height > max_pixels:
            raise InvalidRequest(
                f"{made} ({width * height} pixels); at most EXTRAS_MAX_PIXELS = {max_pixels}",
                field,
            )
        if width < 1 or height < 1:
            raise InvalidRequest(f"{made}: too small to be an image", field)
        largest = max(largest, width * height)
    return largest


def _on_grid(size: Size, factor: float) -> Size:
    """`size` scaled by `factor`, each side rounded down to the grid (A1111's target)."""
    return int(size[0] * factor // GRID * GRID), int(size[1] * factor // GRID * GRID)
