"""A1111's Extras under /sdapi/v1 (upscaling), its upscalers, and interrogation refused.

`extra-single-image` and `extra-batch-images` upscale with the weight-free
upscalers (a1111_upscale) on the API's CPU, in a thread; the images keep their
text chunks (their parameters) and gain A1111's `postprocessing` one. Face
restoration, learned upscalers and CLIP/DeepBooru interrogation need models
darkroom does not have: refused by name, not skipped.
"""

from __future__ import annotations

import html
from typing import Any, Literal

from fastapi import APIRouter
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import OwnerDep
from api.compat import A1111_PREFIX
from api.compat.a1111_upscale import LISTED_SCALE, UPSCALERS, Upscale, check_size
from api.compat.errors import EndpointUnavailable, FeatureUnavailable
from api.compat.images import b64, open_image
from api.deps import StateDep
from shared.errors import InvalidRequest
from shared.png import encode_png, text_chunks
from shared.settings import Settings

router = APIRouter(prefix=A1111_PREFIX, tags=["automatic1111"], include_in_schema=False)

POSTPROCESSING_CHUNK = "postprocessing"
# A batch's images together come out at most this many times EXTRAS_MAX_PIXELS:
# every result is held in memory until the answer is sent.
BATCH_PIXELS_FACTOR = 4
# A1111's face restorers, by the field that asks for each.
FACE_RESTORERS = {"gfpgan_visibility": "GFPGAN", "codeformer_visibility": "CodeFormer"}


class ExtrasRequest(BaseModel):
    """A1111's Extras fields (ExtrasBaseRequest), its defaults and bounds."""

    resize_mode: Literal[0, 1] = 0
    show_extras_results: bool = True  # A1111's API answers the images either way
    gfpgan_visibility: float = Field(0, ge=0, le=1)
    codeformer_visibility: float = Field(0, ge=0, le=1)
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, gt=0)
    upscaling_resize_w: int = Field(512, ge=1)
    upscaling_resize_h: int = Field(512, ge=1)
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False  # no face restoration to order it against

    def upscale(self) -> Upscale:
        """The Upscale step asked for; face restoration refused (422) by name."""
        for field, restorer in FACE_RESTORERS.items():
            if getattr(self, field) > 0:
                raise FeatureUnavailable(
                    f"face restoration ({restorer}) is not available in darkroom", field
                )
        return Upscale(
            resize_mode=self.resize_mode,
            by=self.upscaling_resize,
            to=(self.upscaling_resize_w, self.upscaling_resize_h),
            crop=self.upscaling_crop,
            upscaler=self.upscaler_1,
            second=self.upscaler_2,
            second_visibility=self.extras_upscaler_2_visibility,
        )


class ExtrasSingleImageRequest(ExtrasRequest):
    image: str = ""


class FileData(BaseModel):
    data: str
    name: str


class ExtrasBatchImagesRequest(ExtrasRequest):
    imageList: list[FileData]  # A1111's name, camelCase


class ExtrasSingleImageAnswer(BaseModel):
    html_info: str
    image: str


class ExtrasBatchImagesAnswer(BaseModel):
    html_info: str
    images: list[str]


@router.get("/upscalers")
def upscalers(owner: OwnerDep) -> list[dict[str, Any]]:
    """The upscalers of Extras here: the weight-free ones, in A1111's shape."""
    return [
        {"name": name, "model_name": None, "model_path": None, "model_url": None}
        | {"scale": LISTED_SCALE}
        for name in UPSCALERS
    ]


@router.post("/extra-single-image")
async def extra_single_image(
    body: ExtrasSingleImageRequest, state: StateDep, owner: OwnerDep
) -> ExtrasSingleImageAnswer:
    """Upscale one image (A1111's Extras) with None, Lanczos or Nearest."""
    [image], info = await run_in_threadpool(
        _extras, state.settings, body.upscale(), [(body.image, "image")]
    )
    return ExtrasSingleImageAnswer(html_info=info, image=image)


@router.post("/extra-batch-images")
async def extra_batch_images(
    body: ExtrasBatchImagesRequest, state: StateDep, owner: OwnerDep
) -> ExtrasBatchImagesAnswer:
    """Upscale each image of `imageList` (A1111's Extras) with None, Lanczos or Nearest."""
    inputs = [(item.data, f"imageList.{index}.data") for index, item in enumerate(body.imageList)]
    images, info = await run_in_threadpool(_extras, state.settings, body.upscale(), inputs)
    return ExtrasBatchImagesAnswer(html_info=info, images=images)


@router.post("/interrogate")
async def interrogate(owner: OwnerDep) -> None:
    """Refused (501): darkroom has no captioning models."""
    raise EndpointUnavailable(
        "image interrogation (CLIP, DeepBooru) is not available in darkroom: "
        "it has no captioning models"
    )


def _extras(
    settings: Settings, upscale: Upscale, inputs: list[tuple[str, str]]
) -> tuple[list[str], str]:
    """Each input (base64, field) upscaled, as base64 PNG, and A1111's html_info.

    Every size is checked before any work: a refusal costs no resizing."""
    images = [(open_image(value, field), field) for value, field in inputs]
    limit = settings.extras_max_pixels
    total = sum(check_size(upscale, image.size, limit, field) for image, field in images)
    if total > limit * BATCH_PIXELS_FACTOR:
        raise InvalidRequest(
            f"the images would come out {total} pixels in all; at most "
            f"{BATCH_PIXELS_FACTOR} x EXTRAS_MAX_PIXELS = {limit * BATCH_PIXELS_FACTOR} a call",
            "imageList",
        )
    done, record = [], ""
    for image, _ in images:
        result, record = upscale.apply(image.convert("RGB"))
        done.append(b64(encode_png(result, _chunks(settings, image, record))))
    return done, _html(record)


def _chunks(settings: Settings, source: Image.Image, record: str) -> dict[str, str] | None:
    """An Extras output's text chunks, as A1111 writes them: the source's (its
    parameters among them) and what was done to it; none with PNG_METADATA off."""
    if not settings.png_metadata:
        return None
    chunks = text_chunks(source)
    if record:
        chunks[POSTPROCESSING_CHUNK] = record
    return chunks


def _html(text: str) -> str:
    """A1111's html_info: the postprocessing text as a paragraph."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"
