"""Image bytes for the compatible APIs: stored outputs read back, formats, masks.

darkroom stores PNGs and hands out links; OpenAI's `b64_json` and A1111's answers
carry the bytes themselves, in the format asked for, and their masks follow
conventions of their own. All of it is CPU work: callers run it in a thread.
"""

from __future__ import annotations

import base64
import io
from typing import Literal, cast

from PIL import Image, ImageOps

from api.images import decode_image
from shared.errors import InvalidRequest, StorageError
from shared.storage import LocalStorage, S3Storage, Storage

OutputFormat = Literal["png", "jpeg", "webp"]
MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

# OpenAI's mask: the fully transparent pixels are the ones to change.
_TRANSPARENT_IS_WHITE = [255] + [0] * 255
# A1111's painted masks: alpha over half is painted (repaint), as its UI decides.
_OPAQUE_IS_WHITE = [0] * 129 + [255] * 127


def read_stored(storage: Storage, key: str) -> bytes:
    """The bytes of a stored image (the Storage interface itself only writes and links)."""
    if isinstance(storage, LocalStorage):
        try:
            return storage.path(key).read_bytes()
        except OSError as exc:
            raise StorageError(f"could not read image {key}: {exc}") from exc
    if isinstance(storage, S3Storage):
        return _read_s3(storage, key)
    raise StorageError(f"images cannot be read back from {type(storage).__name__}")


def _read_s3(storage: S3Storage, key: str) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        # _key: the bucket prefix, as put() applied it.
        answer = storage.client.get_object(Bucket=storage.bucket, Key=storage._key(key))
        return bytes(answer["Body"].read())
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"could not read image {key} from s3://{storage.bucket}: {exc}") from exc


def convert(png: bytes, output_format: OutputFormat, quality: int | None = None) -> bytes:
    """The stored PNG in `output_format` (JPEG and WebP at `quality`, default 100)."""
    if output_format == "png":
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format=output_format.upper(), quality=100 if quality is None else quality)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes, output_format: OutputFormat) -> str:
    return f"data:{MEDIA_TYPES[output_format]};base64,{b64(data)}"


def openai_mask(mask: bytes, size: tuple[int, int]) -> str:
    """OpenAI's mask (fully transparent = edit) as darkroom's (white = repaint), base64 PNG.

    It must be the image's size, as OpenAI requires, and mark something to edit.
    """
    decoded = decode_image(b64(mask), "mask")
    if (decoded.width, decoded.height) != size:
        raise InvalidRequest(
            f"mask is {decoded.width}x{decoded.height}; it must be the size of image "
            f"({size[0]}x{size[1]})",
            "mask",
        )
    alpha = Image.open(io.BytesIO(decoded.data)).convert("RGBA").getchannel("A")
    repaint = alpha.point(_TRANSPARENT_IS_WHITE)
    if _extrema(repaint)[1] == 0:
        raise InvalidRequest(
            "mask has no fully transparent pixel: it marks nothing to edit "
            "(transparent pixels are the ones to change)",
            "mask",
        )
    return _png_b64(repaint)


def a1111_mask(value: str, invert: bool, size: tuple[int, int]) -> str:
    """A1111's mask (white = repaint; `inpainting_mask_invert` flips it) as darkroom's,
    at the init image's size (A1111 stretches a mask of another size over the image)."""
    decoded = decode_image(value, "mask")
    image = Image.open(io.BytesIO(decoded.data))
    if image.mode in ("RGBA", "LA", "PA") and _extrema(image.getchannel("A"))[0] < 255:
        # A mask painted on a transparent layer: its paint is what repaints.
        mask = image.getchannel("A").point(_OPAQUE_IS_WHITE)
    else:
        mask = image.convert("L")
    if invert:
        mask = ImageOps.invert(mask)
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    return _png_b64(mask)


def open_image(value: str, field: str) -> Image.Image:
    """A client's base64 image (or data: URL), decoded within api.images' limits."""
    return Image.open(io.BytesIO(decode_image(value, field).data))


def image_size(value: str, field: str) -> tuple[int, int]:
    """The size of a base64 input image (refusing what the core would refuse)."""
    decoded = decode_image(value, field)
    return decoded.width, decoded.height


def _extrema(band: Image.Image) -> tuple[float, float]:
    """The smallest and largest value of a one-band image."""
    return cast(tuple[float, float], band.getextrema())


def _png_b64(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return b64(out.getvalue())
