"""The inpainting mask: strokes painted on the canvas, as POST /jobs' `mask_image`.

Pure functions of the canvas's pixels (numpy and Pillow, no Streamlit): the
page lays the canvas out, a test calls them directly.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# The canvas's longer side, in screen pixels: room to paint on a 64-pixel image
# as on a 2048-pixel one, and all of it within the Generate form's column on a
# 1400-pixel-wide window (in a narrower one it scrolls sideways).
CANVAS_PX = 320
# The brush's width on the canvas, in screen pixels.
DEFAULT_BRUSH_PX = 24
MAX_BRUSH_PX = 100


def canvas_size(image_size: tuple[int, int], longer_side: int = CANVAS_PX) -> tuple[int, int]:
    """The canvas for an image of `image_size`: its aspect ratio, its longer side
    `longer_side` (a small image is scaled up, a large one down)."""
    width, height = image_size
    scale = longer_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def mask_from_strokes(strokes: np.ndarray | None, image_size: tuple[int, int]) -> bytes | None:
    """The mask PNG at the image's own size (the API's rule): white where a stroke is
    (any alpha: its soft edges too), black where nothing was painted.

    `strokes` is the canvas's RGBA pixels, the strokes alone (the background image
    is not among them). None when nothing was painted, or nothing that covers an
    image pixel: the job is then image-to-image of the whole image.
    """
    if strokes is None:
        return None
    painted = np.asarray(strokes)[..., 3] > 0
    if not painted.any():
        return None
    # NEAREST: a mask has two values; any filter that blends would add grey ones.
    mask = Image.fromarray(np.where(painted, 255, 0).astype(np.uint8), "L").resize(
        image_size, Image.Resampling.NEAREST
    )
    if mask.getextrema()[1] == 0:
        return None
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()
