"""AUTOMATIC1111's API under /sdapi/v1: txt2img, img2img, checkpoints, samplers,
options, progress and interrupt, as darkroom jobs.

Each txt2img/img2img call is one or more ordinary jobs of the caller's API key
(queued, prioritised, rate-limited, listed in GET /jobs, counted), answered once
they finished; the wait holds no thread and ends after COMPAT_WAIT_S with a 504
naming the jobs. The routes stay out of darkroom's OpenAPI schema: A1111's own
describes them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from api.auth import OwnerDep
from api.compat import A1111_PREFIX, a1111_progress
from api.compat.a1111_fields import header_value, translate
from api.compat.a1111_loras import take_loras
from api.compat.a1111_models import (
    CHECKPOINT_FIELD,
    Checkpoint,
    checkpoint,
    checkpoints,
    choose_model,
    chosen_model,
    find_checkpoint,
)
from api.compat.a1111_options import save_options, saved_options
from api.compat.a1111_schemas import (
    A1111_NAMES,
    MAX_IMAGES_PER_CALL,
    ImagesAnswer,
    Img2ImgRequest,
    ProgressAnswer,
    SamplerItem,
    SDModelItem,
    Txt2ImgRequest,
    info,
    job_fields,
    parameters,
)
from api.compat.images import a1111_mask, b64, image_size, read_stored
from api.compat.jobs import check_succeeded, job_create, run_jobs
from api.deps import StateDep
from api.state import AppState
from shared.errors import InvalidRequest
from shared.jobs import JobRecord, JobStatus
from shared.registry import ModelEntry
from shared.samplers import SCHEDULES, find_sampler, samplers_for
from shared.storage import Storage

router = APIRouter(prefix=A1111_PREFIX, tags=["automatic1111"], include_in_schema=False)

# A1111's default rho of its schedules that have one (the rest: -1).
_DEFAULT_RHO = {"karras": 7.0}


@router.post("/txt2img")
async def txt2img(
    body: Txt2ImgRequest, state: StateDep, owner: OwnerDep, response: Response
) -> ImagesAnswer:
    """batch_size x n_iter images from a prompt: {images (base64 PNG), parameters, info}."""
    return await _generate(state, owner, body, {}, response)


@router.post("/img2img")
async def img2img(
    body: Img2ImgRequest, state: StateDep, owner: OwnerDep, response: Response
) -> ImagesAnswer:
    """Image-to-image from `init_images[0]`; with `mask` (white repaints), inpainting."""
    inputs = await run_in_threadpool(_input_fields, body)
    return await _generate(state, owner, body, inputs, response)


@router.get("/loras")
async def loras(state: StateDep, owner: OwnerDep) -> list[dict[str, Any]]:
    """The adapters `<lora:name:weight>` may name: the registry's and the caller's own."""
    own = await run_in_threadpool(state.loras.own, owner)
    listed: list[tuple[str, str, dict[str, Any]]] = [
        (name, entry.source, {"base": entry.base, "triggers": entry.triggers})
        for name, entry in sorted(state.registry.loras.items())
    ]
    listed += [(name, f"(this key's) {name}", {"base": r.base}) for name, r in sorted(own.items())]
    return [
        {"name": name, "alias": name, "path": path, "metadata": metadata}
        for name, path, metadata in listed
    ]


@router.get("/sd-models")
async def sd_models(state: StateDep) -> list[SDModelItem]:
    """The models live workers can serve now (or `autoscaled` ones) as A1111 checkpoints
    (the `title` is what clients send back); all of the registry's while no worker is
    live yet."""
    serving = await state.serving.get()
    return [
        SDModelItem(
            title=found.title,
            model_name=found.name,
            hash=found.short_hash,
            sha256=found.sha256,
            filename=found.entry.id,
        )
        for found in checkpoints(state)
        if serving.servable(found.name, state.registry)
    ]


@router.get("/samplers")
async def samplers(state: StateDep, owner: OwnerDep) -> list[SamplerItem]:
    """The samplers of the caller's current model (flux and sd3 have only Euler)."""
    model = await chosen_model(state, owner) or state.registry.runtime.primary_model
    return [
        SamplerItem(name=s.name, aliases=list(s.aliases), options=dict(s.options))
        for s in samplers_for(state.registry.models[model].type)
    ]


@router.get("/schedulers")
async def schedulers() -> list[dict[str, Any]]:
    """The schedules `scheduler` takes here (diffusers can express them), as A1111 lists
    its own: `name`, `label`, `aliases`, `default_rho`, `need_inner_model`."""
    return [
        {
            "name": schedule.name,
            "label": schedule.label,
            "aliases": list(schedule.aliases) or None,
            "default_rho": _DEFAULT_RHO.get(schedule.name, -1.0),
            "need_inner_model": False,
        }
        for schedule in SCHEDULES
    ]


@router.get("/scripts")
async def scripts() -> dict[str, list[str]]:
    """No scripts (webuiapi asks at start, to see which extensions exist)."""
    return {"txt2img": [], "img2img": []}


@router.get("/options")
async def get_options(state: StateDep, owner: OwnerDep) -> dict[str, Any]:
    """The options the caller wrote, and its `sd_model_checkpoint` (the primary model
    until it chose one)."""
    saved = await saved_options(state, owner)
    current = await _current_checkpoint(state, owner)
    return {**saved, CHECKPOINT_FIELD: current.title, "sd_checkpoint_hash": current.sha256}


@router.post("/options")
async def set_options(options: dict[str, Any], state: StateDep, owner: OwnerDep) -> None:
    """`sd_model_checkpoint` (a title or registry name) becomes the caller's model for its
    A1111 calls that name none; 404 for an unknown one. The other options are kept for
    the caller to read back (at most 100, 4 KB each) and change no generation:
    darkroom has none of A1111's settings behind them."""
    wanted = options.get(CHECKPOINT_FIELD)
    if wanted is not None:
        await choose_model(state, owner, str(wanted))
    others = {name: value for name, value in options.items() if name != CHECKPOINT_FIELD}
    await save_options(state, owner, others)


@router.get("/progress")
async def progress(
    state: StateDep, owner: OwnerDep, skip_current_image: bool = False
) -> ProgressAnswer:
    """Progress of the caller's own most recent running (else queued) job, with its
    live preview as `current_image` (base64 PNG) unless `skip_current_image`."""
    return await a1111_progress.progress(state, owner, not skip_current_image)


@router.post("/interrupt")
async def interrupt(state: StateDep, owner: OwnerDep) -> dict[str, Any]:
    """Cancel the caller's own running job(s) at their next step; their calls answer with
    the images finished before (A1111's interrupt)."""
    await a1111_progress.interrupt(state, owner)
    return {}


async def _generate(
    state: AppState,
    owner: str,
    body: Txt2ImgRequest,
    inputs: dict[str, Any],
    response: Response,
) -> ImagesAnswer:
    if body.image_count > MAX_IMAGES_PER_CALL:
        raise InvalidRequest(
            f"batch_size x n_iter is {body.image_count}; at most {MAX_IMAGES_PER_CALL} "
            "images per call",
            "batch_size",
        )
    model = await _model(state, owner, body)
    entry = state.registry.models[model or state.registry.runtime.primary_model]
    sampler = _sampler(entry, body)
    extras = translate(body, entry, sampler)
    inputs = {**inputs, **extras.fields}
    tagged = await run_in_threadpool(take_loras, state, owner, body.prompt, model)
    if tagged.loras:
        inputs = {**inputs, "loras": [choice.model_dump() for choice in tagged.loras]}
    prompted = body.model_copy(update={"prompt": tagged.prompt})
    jobs = [
        # A1111 generates from an empty prompt (the unconditional image): so does darkroom.
        job_create({**fields, **inputs}, A1111_NAMES, allow_empty_prompt=True)
        for fields in job_fields(prompted, model, sampler)
    ]
    records = await run_jobs(state, owner, jobs, A1111_NAMES)
    # An interrupted call answers with what was finished, as A1111's does.
    check_succeeded(records, allow_canceled=True)
    done = [record for record in records if record.status is JobStatus.SUCCEEDED]
    images = await run_in_threadpool(_images, state.storage, done) if body.send_images else []
    used = _checkpoint_used(state, records[0])
    sampler_name = records[0].params.sampler or sampler or "Default"
    ignored = extras.ignored + tagged.ignored
    if ignored:
        lora_tags = [f"<lora:{item.split(':', 1)[0]}>" for item in tagged.ignored]
        response.headers["Darkroom-Ignored"] = header_value(extras.ignored + lora_tags)
    return ImagesAnswer(
        images=images,
        parameters=parameters(body),
        info=info(body, records, used, sampler_name, ignored),
    )


async def _model(state: AppState, owner: str, body: Txt2ImgRequest) -> str | None:
    """override_settings.sd_model_checkpoint, else the caller's chosen model, else none
    (the job then runs on any worker, as darkroom's own jobs naming no model)."""
    override = (body.override_settings or {}).get(CHECKPOINT_FIELD)
    if override:
        return find_checkpoint(state, str(override)).name
    return await chosen_model(state, owner)


def _sampler(entry: ModelEntry, body: Txt2ImgRequest) -> str | None:
    """The sampler by its canonical name; `scheduler: karras` picks its Karras variant.
    A name not found goes on as sent: the core refuses it, listing the known ones."""
    name = body.sampler_name or body.sampler_index
    if not name:
        return None
    found = find_sampler(name, entry.type, body.scheduler)
    return found.name if found is not None else name


def _input_fields(body: Img2ImgRequest) -> dict[str, Any]:
    """The JobCreate fields of img2img's inputs (CPU work: run in a thread)."""
    if not body.init_images or len(body.init_images) != 1:
        raise InvalidRequest("init_images must hold exactly one image", "init_images")
    [init_image] = body.init_images
    fields: dict[str, Any] = {"init_image": init_image, "strength": body.denoising_strength}
    if body.mask:
        size = image_size(init_image, "init_images")
        fields["mask_image"] = a1111_mask(body.mask, body.inpainting_mask_invert == 1, size)
    return fields


def _images(storage: Storage, records: list[JobRecord]) -> list[str]:
    return [b64(read_stored(storage, image.key)) for r in records for image in r.images]


async def _current_checkpoint(state: AppState, owner: str) -> Checkpoint:
    name = await chosen_model(state, owner) or state.registry.runtime.primary_model
    return checkpoint(name, state.registry.models[name])


def _checkpoint_used(state: AppState, record: JobRecord) -> Checkpoint:
    """The model that made the images (a fallback model, when the job's own failed to load)."""
    models = state.registry.models
    name = record.model_used if record.model_used in models else record.model
    return checkpoint(name, models[name])
