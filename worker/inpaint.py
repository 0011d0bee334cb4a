"""Inpainting's inputs and its one promise: pixels outside the mask come back unchanged.

The pipeline repaints in latent space, at a multiple of 8 pixels, through the
VAE: even the pixels it keeps come back slightly changed. So its output is
resized to the input's size and composited over the input through the mask:
where the mask is black, the input's own pixels, exactly.
"""

from __future__ import annotations

import io

from PIL import Image


def load_mask(data: bytes, size: tuple[int, int]) -> Image.Image:
    """The mask as 8-bit grayscale at `size`: 255 repaint, 0 keep (alpha ignored)."""
    mask: Image.Image = Image.open(io.BytesIO(data))
    if mask.mode in ("RGBA", "LA", "PA"):
        # Only the colour counts (white repaints); transparency is the OpenAI
        # convention, converted by its compatible API before it gets here.
        mask = mask.convert("RGB")
    mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return mask


def keep_unmasked(generated: Image.Image, source: Image.Image, mask: Image.Image) -> Image.Image:
    """`generated` where the mask is white, `source` where it is black (a blend between)."""
    if generated.size != source.size:
        generated = generated.resize(source.size, Image.Resampling.LANCZOS)
    return Image.composite(generated.convert("RGB"), source.convert("RGB"), mask)
