"""OpenAI's Images API under /v1: generations, edits, variations, models, as darkroom jobs.

Each call is ordinary jobs of the caller's API key (queued, prioritised,
rate-limited, listed in GET /jobs, counted): one per 4 images, submitted all or
none, answered once all finished; the wait holds no thread and ends after
COMPAT_WAIT_S with a 504 naming the jobs.
The routes stay out of darkroom's OpenAPI schema: OpenAI's own describes them.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from api.auth import OwnerDep
from api.compat import OPENAI_PREFIX
from api.compat.errors import UnknownModel
from api.compat.images import OutputFormat, b64, convert, data_url, read_stored
from api.compat.jobs import check_succeeded, job_create, run_jobs, submit_jobs
from api.compat.openai_forms import image_form, input_fields
from api.compat.openai_schemas import (
    OPENAI_NAMES,
    ImageData,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagesResponse,
    ImageVariationRequest,
    ModelList,
    ModelObject,
    job_fields,
    revised_prompt,
)
from api.compat.openai_stream import StreamKind, stream_response
from api.deps import StateDep
from api.state import AppState
from shared.jobs import JobCreate, JobRecord
from shared.storage import Storage

router = APIRouter(prefix=OPENAI_PREFIX, tags=["openai"], include_in_schema=False)

# DALL-E 2's variations: the image redrawn with no prompt, keeping this much of it
# (image-to-image's usual strength, darkroom's default for edits without a mask).
VARIATION_STRENGTH = 0.75


@router.post("/images/generations", response_model=None, response_model_exclude_none=True)
async def create_image(
    body: ImageGenerationRequest, state: StateDep, owner: OwnerDep
) -> ImagesResponse | StreamingResponse:
    """Generate `n` images from a prompt (a job per 4), answered once the jobs finished;
    with `stream`, as Server-Sent Events while they run (api.compat.openai_stream)."""
    jobs = _jobs(state, job_fields(body, body.prompt))
    return await _run(state, owner, jobs, body, "image_generation")


@router.post("/images/edits", response_model=None, response_model_exclude_none=True)
async def edit_image(
    request: Request, state: StateDep, owner: OwnerDep
) -> ImagesResponse | StreamingResponse:
    """Edit an image (multipart: `image`, optional `mask`, `prompt`, options, `strength`).

    Without a mask: image-to-image. With one: inpainting, where the mask's fully
    transparent pixels are the ones repainted and every other pixel is kept.
    """
    body, image, mask = await image_form(request, ImageEditRequest)
    fields = await run_in_threadpool(input_fields, body, body.prompt, image, mask, body.strength)
    return await _run(state, owner, _jobs(state, fields), body, "image_edit")


@router.post("/images/variations", response_model=None, response_model_exclude_none=True)
async def create_variation(request: Request, state: StateDep, owner: OwnerDep) -> ImagesResponse:
    """Variations of an image (multipart: `image`, options), as DALL-E 2 makes them:
    image-to-image with an empty prompt at VARIATION_STRENGTH. Never streamed."""
    body, image, _ = await image_form(request, ImageVariationRequest)
    fields = await run_in_threadpool(input_fields, body, "", image, None, VARIATION_STRENGTH)
    jobs = _jobs(state, fields, allow_empty_prompt=True)
    return await _run_to_the_end(state, owner, jobs, body.response_format)


@router.get("/models")
async def list_models(state: StateDep) -> ModelList:
    """The models live workers can serve now (or `autoscaled` ones), by the names the
    `model` parameter takes (all of the registry's while no worker is live yet)."""
    created = _registry_time(state)
    serving = await state.serving.get()
    return ModelList(
        data=[
            ModelObject(id=name, created=created)
            for name in state.registry.models
            if serving.servable(name, state.registry)
        ]
    )


@router.get("/models/{model_id}")
def get_model(model_id: str, state: StateDep) -> ModelObject:
    """One registry model; 404 for a name the registry does not have."""
    _check_model(state, model_id)
    return ModelObject(id=model_id, created=_registry_time(state))


async def _run(
    state: AppState,
    owner: str,
    jobs: list[JobCreate],
    body: ImageGenerationRequest | ImageEditRequest,
    kind: StreamKind,
) -> ImagesResponse | StreamingResponse:
    """Submit the call's jobs (all or none) and answer once all finished, or stream them."""
    if body.stream:
        job_ids = await submit_jobs(state, owner, jobs, OPENAI_NAMES)
        images = [job.num_images for job in jobs]
        return stream_response(state, list(zip(job_ids, images, strict=True)), body, kind)
    output_format = body.output_format or "png"
    return await _run_to_the_end(
        state, owner, jobs, body.response_format, output_format, body.output_compression
    )


async def _run_to_the_end(
    state: AppState,
    owner: str,
    jobs: list[JobCreate],
    response_format: str | None,
    output_format: OutputFormat = "png",
    quality: int | None = None,
) -> ImagesResponse:
    """Submit the call's jobs (all or none), wait until all finished, answer their images."""
    records = await run_jobs(state, owner, jobs, OPENAI_NAMES)
    check_succeeded(records)
    return await _answer(state.storage, records, response_format, output_format, quality)


def _jobs(
    state: AppState, fields: list[dict[str, Any]], allow_empty_prompt: bool = False
) -> list[JobCreate]:
    """The call's jobs; every one names the same model (or none)."""
    if fields[0]["model"] is not None:
        _check_model(state, fields[0]["model"])
    return [job_create(job, OPENAI_NAMES, allow_empty_prompt) for job in fields]


def _check_model(state: AppState, name: str) -> None:
    # Before the core sees it: an unknown model is OpenAI's 404, not a bad parameter.
    if name not in state.registry.models:
        raise UnknownModel(name, sorted(state.registry.models))


def _registry_time(state: AppState) -> int:
    """`created` of the models: when the registry file last changed (0 if unreadable)."""
    try:
        return int(os.stat(state.settings.registry_path).st_mtime)
    except OSError:
        return 0


async def _answer(
    storage: Storage,
    records: list[JobRecord],
    response_format: str | None,
    output_format: OutputFormat,
    quality: int | None,
) -> ImagesResponse:
    """The jobs' images, in order, as OpenAI answers them.

    `url` of a PNG is the stored image's own link. Other formats are made here
    from the stored PNG and exist nowhere else, so their `url` is a data: URL:
    the SDKs take any string, browsers show it, and it needs no key and never
    expires (a converted copy stored beside the PNG would be neither listed on
    the job nor served).
    """
    as_b64 = response_format == "b64_json"
    images = [(record, image) for record in records for image in record.images]
    if not as_b64 and output_format == "png":
        data = [ImageData(url=storage.url(image.key)) for _, image in images]
    else:
        keys = [image.key for _, image in images]
        blobs = await run_in_threadpool(_encoded, storage, keys, output_format, quality)
        if as_b64:
            data = [ImageData(b64_json=b64(blob)) for blob in blobs]
        else:
            data = [ImageData(url=data_url(blob, output_format)) for blob in blobs]
    for (record, _), item in zip(images, data, strict=True):
        item.revised_prompt = revised_prompt(record)
    return ImagesResponse(created=_finished(records), data=data)


def _encoded(
    storage: Storage, keys: list[str], output_format: OutputFormat, quality: int | None
) -> list[bytes]:
    return [convert(read_stored(storage, key), output_format, quality) for key in keys]


def _finished(records: list[JobRecord]) -> int:
    """`created`: when the call's last job finished."""
    return int(max(record.finished_at or record.created_at for record in records).timestamp())
