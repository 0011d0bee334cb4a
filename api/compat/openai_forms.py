"""The multipart calls of OpenAI's Images API (edits, variations): their forms as jobs.

Parsed here rather than by FastAPI: the SDKs name the image `image` or
`image[]`, and errors must keep OpenAI's shape (a bad field is a 400 naming it).
Only edits take a `mask`; on a variation it is an unknown field, as OpenAI's.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from api.compat.images import b64, image_size, openai_mask
from api.compat.openai_schemas import ImageEditRequest, ImageVariationRequest, job_fields
from shared.errors import InvalidRequest

_Fields = TypeVar("_Fields", ImageEditRequest, ImageVariationRequest)
_IMAGE_PARTS = ("image", "image[]")


async def image_form(
    request: Request, schema: type[_Fields]
) -> tuple[_Fields, bytes, bytes | None]:
    """The call's fields, its one image and (edits only) its mask."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("send the image as multipart/form-data", "image")
    files = (*_IMAGE_PARTS, "mask") if schema is ImageEditRequest else _IMAGE_PARTS
    async with request.form() as form:
        images = [image for part in _IMAGE_PARTS for image in form.getlist(part)]
        mask = form.get("mask") if "mask" in files else None
        if len(images) != 1 or not isinstance(images[0], UploadFile):
            raise InvalidRequest("send exactly one image file (several are not supported)", "image")
        if mask is not None and not isinstance(mask, UploadFile):
            raise InvalidRequest("mask must be a PNG file", "mask")
        fields = {k: v for k, v in form.multi_items() if k not in files}
        try:
            body = schema.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        return body, await images[0].read(), await mask.read() if mask is not None else None


def input_fields(
    body: ImageEditRequest | ImageVariationRequest,
    prompt: str,
    image: bytes,
    mask: bytes | None,
    strength: float | None,
) -> list[dict[str, Any]]:
    """The JobCreate fields of each job of the call, each with the image (and mask)
    as input (CPU work: run in a thread)."""
    init_image = b64(image)
    size = image_size(init_image, "image")  # checked here, so that errors name `image`
    inputs = {"init_image": init_image, "strength": strength}
    if mask is not None:
        inputs["mask_image"] = openai_mask(mask, size)
    return [{**fields, **inputs} for fields in job_fields(body, prompt)]
