"""Decoding and checking client-supplied images before anything is queued."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

from PIL import Image

from shared.errors import InvalidRequest

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
# 4096 x 4096: larger inputs are refused before Pillow decodes a single pixel.
MAX_INIT_PIXELS = 16 * 1024 * 1024
MAX_INIT_BYTES = 15 * 1024 * 1024
# Its base64 text (and a data: URL prefix): longer input is refused before decoding.
MAX_INIT_CHARS = (MAX_INIT_BYTES + 2) // 3 * 4 + 256


@dataclass(frozen=True)
class DecodedImage:
    data: bytes
    width: int
    height: int
    format: str


def decode_init_image(value: str) -> DecodedImage:
    """Decode a base64 (or data: URL) image, refusing anything but a sane PNG/JPEG/WebP."""
    return decode_image(value, "init_image")


def decode_image(value: str, field: str) -> DecodedImage:
    """decode_init_image for any image field (errors name `field`)."""
    if len(value) > MAX_INIT_CHARS:
        raise InvalidRequest(f"{field} is larger than {MAX_INIT_BYTES} bytes", field)
    data = _b64decode(value, field)
    if len(data) > MAX_INIT_BYTES:
        raise InvalidRequest(f"{field} is larger than {MAX_INIT_BYTES} bytes", field)
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, on decompression bombs: make both errors.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
            width, height = image.size
            if width * height > MAX_INIT_PIXELS:
                raise InvalidRequest(
                    f"{field} is {width}x{height}; at most {MAX_INIT_PIXELS} pixels", field
                )
            image.load()
    except InvalidRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidRequest(f"{field} refused: {exc}", field) from None
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise InvalidRequest(
            f"{field} is not a valid PNG, JPEG or WebP image ({type(exc).__name__})", field
        ) from exc
    return DecodedImage(data=data, width=width, height=height, format=str(image.format))


def _b64decode(value: str, field: str) -> bytes:
    if value.startswith("data:"):
        header, _, value = value.partition(",")
        if ";base64" not in header:
            raise InvalidRequest(f"{field} data URL must be base64-encoded", field)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{field} is not valid base64", field) from None
