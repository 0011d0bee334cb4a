"""ComfyUI's API at the root, under ComfyUI's own names: workflows as darkroom jobs.

`POST /prompt` takes a workflow in API format (api.compat.comfy_workflow reads
it) and queues its generation as ordinary jobs of the caller (auth, tenancy,
rate limits, fair share, `GET /jobs`); history, queue, files and uploads are
each key's own. The routes answer at `/...` and at `/api/...`, as ComfyUI's do
(Open WebUI uploads to `/api/upload/image`). The `/ws` socket is
api.compat.comfy_ws. ComfyUI's `/models` family is left out: darkroom's
`/models` stays.
"""

from __future__ import annotations

import io
import json
import platform
import uuid
from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.auth import OwnerDep
from api.compat.comfy_nodes import object_info as node_definitions
from api.compat.comfy_state import PromptState, parse_filename, prompt_state, prompt_states
from api.compat.comfy_store import ComfyStore, PromptRecord, upload_name
from api.compat.comfy_workflow import Plan, Upload, WorkflowInvalid, job_seed, translate
from api.compat.images import b64, read_stored
from api.compat.jobs import cancel_quietly, job_create, split_images, submit_jobs
from api.deps import StateDep
from api.images import decode_image
from api.reads import fetch_record
from api.state import AppState
from shared.errors import InvalidRequest, JobNotFound
from shared.jobs import JobStatus

router = APIRouter(tags=["comfyui"], include_in_schema=False)

# The core's field names as a workflow spells them (its refusals name them so).
COMFY_NAMES = {
    "guidance_scale": "cfg",
    "num_images": "batch_size",
    "model": "ckpt_name",
    "sampler": "sampler_name",
    "strength": "denoise",
}
# An upload's name: what a file system takes.
MAX_NAME_CHARS = 255
# Which node a refusal of the core names: the sampler's, but the size's is the latent's.
_LATENT_FIELDS = {"width", "height"}


def comfy_store(state: AppState) -> ComfyStore:
    return ComfyStore(state.mux, state.settings.job_ttl_s)


@router.post("/prompt")
async def queue_prompt(request: Request, state: StateDep, owner: OwnerDep) -> Any:
    """Queue a workflow: `{prompt_id, number, node_errors}`, or ComfyUI's 400 naming
    each node that cannot run (nothing queued)."""
    try:
        body = await request.json()
    except ValueError:
        return _refused(
            {
                "type": "invalid_prompt",
                "message": "the body is not JSON",
                "details": "",
                "extra_info": {},
            }
        )
    if not isinstance(body, dict):
        body = {}
    store = comfy_store(state)
    try:
        plan = translate(body.get("prompt"), _model_types(state), await _lora_names(state, owner))
        images = await _inputs(store, owner, plan)
    except WorkflowInvalid as refused:
        return JSONResponse(refused.as_comfy(), status_code=400)
    fields = {**plan.fields, **images, "source_seed": plan.seed}
    if not state.registry.models[plan.fields["model"]].params.use_negative_prompt:
        # A model that takes none (FLUX): ComfyUI runs the negative conditioning at no
        # effect there, darkroom's core would refuse it; it is left out.
        fields["negative_prompt"] = None
    jobs = [
        job_create(
            {**fields, "seed": seed, "num_images": count}, COMFY_NAMES, allow_empty_prompt=True
        )
        for seed, count in split_images(plan.batch_size, job_seed(plan.seed))
    ]
    try:
        job_ids = await submit_jobs(state, owner, jobs, COMFY_NAMES)
    except InvalidRequest as exc:
        return _refused_by_core(plan, body["prompt"], exc)
    record = PromptRecord(
        prompt_id=await _new_prompt_id(store, body.get("prompt_id")),
        owner=owner,
        number=await store.next_number(),
        job_ids=job_ids,
        workflow=body["prompt"],
        extra_data=_extra_data(body),
        outputs=plan.outputs,
        prefixes=plan.prefixes,
        sampler_node=plan.sampler_node,
        seed=plan.seed,
        client_id=str(body["client_id"]) if body.get("client_id") else None,
    )
    await store.save(record)
    return {"prompt_id": record.prompt_id, "number": record.number, "node_errors": {}}


@router.get("/history/{prompt_id}")
async def history_of(prompt_id: str, state: StateDep, owner: OwnerDep) -> dict[str, Any]:
    """The prompt once it ran (`{}` while it runs, and for another key's)."""
    record = await comfy_store(state).load(prompt_id, owner)
    found = await prompt_state(state, record) if record is not None else None
    return {prompt_id: found.history_entry()} if found is not None and found.finished else {}


@router.get("/history")
async def history(state: StateDep, owner: OwnerDep, max_items: int | None = None) -> dict[str, Any]:
    """The key's prompts that ran, newest first."""
    finished = [p for p in await _states(state, owner) if p.finished]
    listed = finished[:max_items] if max_items is not None else finished
    return {p.record.prompt_id: p.history_entry() for p in listed}


@router.get("/queue")
async def queue(state: StateDep, owner: OwnerDep) -> dict[str, Any]:
    """The key's prompts running and waiting, as ComfyUI lists its queue."""
    active = [p for p in await _states(state, owner) if not p.finished]
    return {
        "queue_running": [p.record.queue_entry() for p in active if p.status == "running"],
        "queue_pending": [
            p.record.queue_entry() for p in reversed(active) if p.status == "pending"
        ],
    }


@router.post("/queue")
async def change_queue(request: Request, state: StateDep, owner: OwnerDep) -> Response:
    """`{"delete": [prompt ids]}` or `{"clear": true}`: cancel the key's own waiting prompts."""
    body = await _json_object(request)
    states = [p for p in await _states(state, owner) if p.status == "pending"]
    doomed = (
        states
        if body.get("clear")
        else [p for p in states if p.record.prompt_id in body.get("delete", [])]
    )
    await run_in_threadpool(cancel_quietly, state, [j for p in doomed for j in p.record.job_ids])
    return Response(status_code=200)


@router.post("/interrupt")
async def interrupt(request: Request, state: StateDep, owner: OwnerDep) -> Response:
    """Stop the key's running prompt (`{"prompt_id"}`: that one) at its next step."""
    body = await _json_object(request)
    running = [p for p in await _states(state, owner) if p.status == "running"]
    wanted = body.get("prompt_id")
    doomed = [p for p in running if wanted in (None, p.record.prompt_id)]
    await run_in_threadpool(cancel_quietly, state, [j for p in doomed for j in p.record.job_ids])
    return Response(status_code=200)


@router.get("/view")
async def view(
    state: StateDep, owner: OwnerDep, filename: str, type: str = "output", subfolder: str = ""
) -> Response:
    """An output image of the key's prompts, or one of its uploads (`type=input`)."""
    if type == "input":
        data = await comfy_store(state).upload(owner, upload_name(subfolder, filename))
    else:
        data = await _output_file(state, owner, filename)
    if data is None:
        raise JobNotFound(filename)
    return Response(data, media_type=_media_type(filename))


@router.post("/upload/image")
async def upload_image(request: Request, state: StateDep, owner: OwnerDep) -> dict[str, str]:
    """Keep an image for LoadImage (`image` file; `subfolder`, `type`, `overwrite`)."""
    async with request.form() as form:
        image, fields = await _upload_form(form)
    return await _keep_upload(state, owner, image, fields)


@router.post("/upload/mask")
async def upload_mask(request: Request, state: StateDep, owner: OwnerDep) -> dict[str, str]:
    """A mask painted over an uploaded image: its alpha becomes the image's, as ComfyUI's
    mask editor saves it (`original_ref` names the image)."""
    async with request.form() as form:
        mask, fields = await _upload_form(form)
        reference = json.loads(str(form.get("original_ref") or "{}"))
    name = upload_name(str(reference.get("subfolder", "")), str(reference.get("filename", "")))
    original = await comfy_store(state).upload(owner, name)
    if original is None:
        raise InvalidRequest(f"original_ref: no upload named {name!r}", "original_ref")
    merged = await run_in_threadpool(_with_alpha_of, original, mask)
    return await _keep_upload(state, owner, merged, fields)


@router.get("/object_info")
async def object_info(state: StateDep, owner: OwnerDep) -> dict[str, Any]:
    return await _object_info(state, owner)


@router.get("/object_info/{node_class}")
async def object_info_of(node_class: str, state: StateDep, owner: OwnerDep) -> dict[str, Any]:
    nodes = await _object_info(state, owner)
    return {node_class: nodes[node_class]} if node_class in nodes else {}


@router.get("/system_stats")
async def system_stats(state: StateDep, owner: OwnerDep) -> dict[str, Any]:
    """ComfyUI's shape. The GPUs are the workers' (GET /status lists them): none here."""
    return {
        "system": {
            "os": platform.system().lower(),
            "python_version": platform.python_version(),
            "embedded_python": False,
            "comfyui_version": "darkroom",
            "pytorch_version": "",
            "argv": [],
            "ram_total": 0,
            "ram_free": 0,
        },
        "devices": [],
    }


# --- helpers ------------------------------------------------------------------------------


def _model_types(state: AppState) -> dict[str, str]:
    return {name: entry.type for name, entry in state.registry.models.items()}


async def _lora_names(state: AppState, owner: str) -> set[str]:
    own = await run_in_threadpool(state.loras.own, owner)
    return {*state.registry.loras, *own}


async def _object_info(state: AppState, owner: str) -> dict[str, Any]:
    loras = sorted(await _lora_names(state, owner))
    return node_definitions(list(state.registry.models), loras, [])


async def _inputs(store: ComfyStore, owner: str, plan: Plan) -> dict[str, str]:
    """The job's init image and mask from the key's uploads (base64, as JobCreate takes)."""
    fields: dict[str, str] = {}
    if plan.image is not None:
        fields["init_image"] = b64(await _upload_bytes(store, owner, plan.image))
    if plan.mask is not None:
        raw = await _upload_bytes(store, owner, plan.mask)
        fields["mask_image"] = b64(await run_in_threadpool(_mask_png, raw, plan.mask.channel))
    return fields


async def _upload_bytes(store: ComfyStore, owner: str, upload: Upload) -> bytes:
    data = await store.upload(owner, upload.name)
    if data is None:
        error = {
            "type": "custom_validation_failed",
            "message": "Custom validation failed for node",
            "details": f"image - Invalid image file: {upload.name}",
            "extra_info": {"input_name": "image"},
        }
        raise WorkflowInvalid(
            {
                **error,
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
            },
            {
                upload.node_id: {
                    "errors": [error],
                    "dependent_outputs": [],
                    "class_type": "LoadImage",
                }
            },
        )
    return data


def _mask_png(data: bytes, channel: str | None) -> bytes:
    """darkroom's mask (white repaints) from ComfyUI's: a transparent pixel repaints
    (alpha), or a bright one (red, green, blue)."""
    image = Image.open(io.BytesIO(data)).convert("RGBA")
    band = image.getchannel({"red": "R", "green": "G", "blue": "B"}.get(channel or "alpha", "A"))
    if channel in (None, "alpha"):
        mask = band.point(lambda v: 255 if v < 128 else 0)
    else:
        mask = band.point(lambda v: 255 if v >= 128 else 0)
    out = io.BytesIO()
    mask.convert("L").save(out, format="PNG")
    return out.getvalue()


async def _new_prompt_id(store: ComfyStore, wanted: Any) -> str:
    """The client's own prompt_id (newer ComfyUI clients choose it) when it is a fresh
    UUID, else a new one."""
    try:
        chosen = str(uuid.UUID(str(wanted)))
    except ValueError:
        return str(uuid.uuid4())
    if await store.exists(chosen):
        raise InvalidRequest(f"prompt_id {chosen} is taken", "prompt_id")
    return chosen


def _extra_data(body: dict[str, Any]) -> dict[str, Any]:
    extra = body.get("extra_data")
    return extra if isinstance(extra, dict) else {}


def _refused(error: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"error": error, "node_errors": {}}, status_code=400)


def _refused_by_core(plan: Plan, workflow: dict[str, Any], exc: InvalidRequest) -> JSONResponse:
    """A limit of the model (size, steps) the core refused, on the node that set it."""
    node = plan.sampler_node
    if exc.field in _LATENT_FIELDS:
        node = str(workflow[plan.sampler_node]["inputs"]["latent_image"][0])
    error = {
        "type": "invalid_input",
        "message": str(exc),
        "details": f"{exc.field}: {exc}" if exc.field else str(exc),
        "extra_info": {"input_name": exc.field},
    }
    invalid = WorkflowInvalid(
        {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        {
            node: {
                "errors": [error],
                "dependent_outputs": list(plan.outputs),
                "class_type": workflow[node]["class_type"],
            }
        },
    )
    return JSONResponse(invalid.as_comfy(), status_code=400)


async def _states(state: AppState, owner: str) -> list[PromptState]:
    return await prompt_states(state, await comfy_store(state).recent(owner))


async def _output_file(state: AppState, owner: str, filename: str) -> bytes | None:
    parsed = parse_filename(filename)
    if parsed is None:
        return None
    job_id, index = parsed
    record = await fetch_record(state, job_id)
    if record is None or record.owner != owner or record.status is not JobStatus.SUCCEEDED:
        return None
    if index >= len(record.images):
        return None
    return await run_in_threadpool(read_stored, state.storage, record.images[index].key)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def _upload_form(form: Any) -> tuple[bytes, dict[str, str]]:
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise InvalidRequest("send the image as a multipart file part named image", "image")
    data = await image.read()
    if len(image.filename or "") > MAX_NAME_CHARS:
        raise InvalidRequest(f"the file name is over {MAX_NAME_CHARS} characters", "image")
    fields = {
        "filename": PurePosixPath(image.filename or "image.png").name,
        "subfolder": str(form.get("subfolder") or ""),
        "type": str(form.get("type") or "input"),
        "overwrite": str(form.get("overwrite") or "false").lower(),
    }
    return data, fields


async def _keep_upload(
    state: AppState, owner: str, data: bytes, fields: dict[str, str]
) -> dict[str, str]:
    # Checked as darkroom checks any input image (format, size, pixels).
    await run_in_threadpool(decode_image, b64(data), "image")
    store = comfy_store(state)
    filename, subfolder = fields["filename"], fields["subfolder"]
    if fields["overwrite"] not in ("true", "1"):
        filename = await _free_name(store, owner, subfolder, filename)
    await store.put_upload(owner, upload_name(subfolder, filename), data)
    return {"name": filename, "subfolder": subfolder, "type": fields["type"]}


async def _free_name(store: ComfyStore, owner: str, subfolder: str, filename: str) -> str:
    """`name (1).png`, `name (2).png`, ... as ComfyUI names an upload that would replace one."""
    path = PurePosixPath(filename)
    candidate, number = filename, 1
    while await store.upload(owner, upload_name(subfolder, candidate)) is not None:
        candidate = f"{path.stem} ({number}){path.suffix}"
        number += 1
    return candidate


def _with_alpha_of(original: bytes, mask: bytes) -> bytes:
    image = Image.open(io.BytesIO(original)).convert("RGBA")
    alpha = Image.open(io.BytesIO(mask)).convert("RGBA").getchannel("A")
    image.putalpha(alpha.resize(image.size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _media_type(filename: str) -> str:
    suffix = PurePosixPath(filename).suffix.lower()
    return {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(
        suffix, "image/png"
    )
