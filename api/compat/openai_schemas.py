"""OpenAI's Images API as darkroom sees it: its requests, answers, and their translation.

Every parameter OpenAI's own API takes is accepted (those that mean nothing
here are ignored, see docs/compat.md); anything else is refused with a 400, as
OpenAI refuses an unrecognized argument. Five parameters of vLLM-Omni's and
SGLang's servers (sent by the SDKs through `extra_body`) reach darkroom's
own: negative_prompt, num_inference_steps, guidance_scale, seed, sampler.

A call of `n` images is one job per MAX_IMAGES_PER_JOB of them (`split_images`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.compat.images import OutputFormat
from api.compat.jobs import split_images
from shared.errors import InvalidRequest
from shared.jobs import JobRecord
from shared.loras import LoraChoice

# darkroom's field names as OpenAI's clients know them, for the errors.
OPENAI_NAMES = {
    "width": "size",
    "height": "size",
    "num_images": "n",
    "steps": "num_inference_steps",
    "init_image": "image",
    "mask_image": "mask",
}
# DALL-E 2's limit of `n`; above MAX_IMAGES_PER_JOB a call takes several jobs.
MAX_IMAGES_PER_CALL = 10
Quality = Literal["auto", "low", "medium", "high", "xhigh", "max", "standard", "hd"]
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class _CallOptions(BaseModel):
    """What every image call takes: OpenAI's fields common to DALL-E 2's variations and
    to generations and edits, and darkroom's own parameters."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="A registry name; default: the primary model.")
    n: int | None = Field(None, ge=1, le=MAX_IMAGES_PER_CALL, description="Images (jobs of 4).")
    size: str | None = Field(None, description="`WIDTHxHEIGHT` or `auto` (the model's default).")
    response_format: Literal["url", "b64_json"] | None = None
    # Accepted and ignored: the job's owner is the API key.
    user: str | None = None
    # darkroom's own parameters, top level as vLLM-Omni and SGLang take them.
    negative_prompt: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    sampler: str | None = Field(None, description="An AUTOMATIC1111 sampler name.")
    # extra_body={"loras": [{"name": ..., "scale": ...}]} (a JSON string in a form).
    loras: list[LoraChoice] | None = Field(None, max_length=16, description="LoRA adapters.")

    @field_validator("loras", mode="before")
    @classmethod
    def _loras_in_a_form(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    @field_validator("size")
    @classmethod
    def _size_syntax(cls, value: str | None) -> str | None:
        if value is not None and value != "auto" and not _SIZE.match(value):
            raise ValueError("size must be WIDTHxHEIGHT (e.g. 512x512) or auto")
        return value


class _ImageOptions(_CallOptions):
    """What generations and edits share besides."""

    prompt: str
    output_format: OutputFormat | None = None
    output_compression: int | None = Field(None, ge=0, le=100, description="JPEG/WebP quality.")
    # Accepted and ignored (docs/compat.md says why).
    quality: Quality | None = None
    background: Literal["transparent", "opaque", "auto"] | None = Field(
        None, description="`transparent` is refused: darkroom's images are opaque."
    )
    moderation: Literal["low", "auto"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None
    safety_identifier: str | None = None
    # Server-Sent Events: partial images (live previews), then the final images.
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3, description="With stream: 0-3.")

    @field_validator("background")
    @classmethod
    def _opaque(cls, value: str | None) -> str | None:
        if value == "transparent":
            raise ValueError("transparent backgrounds are not supported: the images are opaque")
        return value


class ImageGenerationRequest(_ImageOptions):
    """Body of POST /v1/images/generations."""

    style: Literal["vivid", "natural"] | None = None


class ImageEditRequest(_ImageOptions):
    """The fields of POST /v1/images/edits besides its files (`image`, `mask`)."""

    strength: float | None = Field(None, description="How much of the image changes, (0, 1].")
    input_fidelity: Literal["high", "low"] | None = None


class ImageVariationRequest(_CallOptions):
    """The fields of POST /v1/images/variations besides its `image` file: DALL-E 2's,
    which has no prompt and does not stream (`stream` is an unknown field there)."""


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "darkroom"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


def job_fields(request: _CallOptions, prompt: str) -> list[dict[str, Any]]:
    """The JobCreate fields of each job of a call (an edit or a variation adds its
    image): `n` images in jobs of at most 4, whose seeds follow on."""
    width, height = parse_size(request.size)
    common = {
        "prompt": prompt,
        "negative_prompt": request.negative_prompt,
        "model": request.model,
        "width": width,
        "height": height,
        "steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale,
        "sampler": request.sampler,
        **({"loras": [c.model_dump() for c in request.loras]} if request.loras else {}),
    }
    return [
        {**common, "seed": seed, "num_images": count}
        for seed, count in split_images(request.n or 1, request.seed)
    ]


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """`WxH` as numbers; `auto` (or none): the model's default (an edit: the image's size)."""
    if size is None or size == "auto":
        return None, None
    match = _SIZE.match(size)
    if match is None:  # the request model checked it already; a direct call may not have
        raise InvalidRequest(f"size {size!r} is not WIDTHxHEIGHT", "size")
    return int(match.group(1)), int(match.group(2))


def revised_prompt(record: JobRecord) -> str | None:
    """The prompt the model was given, when prompt optimisation changed it."""
    optimized = record.params.optimized_prompt
    return optimized if optimized and optimized != record.params.prompt else None
