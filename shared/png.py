"""PNGs with text chunks: written with them, and read back.

The workers' stored images and the API's Extras outputs carry their generation
parameters as text chunks (tEXt, or iTXt for text beyond Latin-1), as
AUTOMATIC1111 writes them; the API's png-info reads them back. Pillow only.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image, PngImagePlugin


def encode_png(image: Image.Image, text: Mapping[str, str] | None = None) -> bytes:
    """The image as PNG, with `text` as its text chunks (none: none at all)."""
    chunks = None
    if text:
        chunks = PngImagePlugin.PngInfo()
        for key, value in text.items():
            chunks.add_text(key, value)  # iTXt where the value is not Latin-1
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=chunks)
    return buffer.getvalue()


def text_chunks(image: Image.Image) -> dict[str, str]:
    """An image's text metadata: a PNG's text chunks (those after its pixels too), or
    whatever text another format's reader found."""
    found: dict[Any, Any] = (
        image.text if isinstance(image, PngImagePlugin.PngImageFile) else image.info
    )
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}
