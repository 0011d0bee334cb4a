"""LoRA adapters: the registry's and the caller's own (docs/models.md, "LoRA adapters")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from api.auth import OwnerDep
from api.deps import StateDep
from api.lora_fetch import fetch_lora
from shared.errors import Forbidden, InvalidRequest, LoraNotFound
from shared.loras import LORA_BASES, MAX_SCALE, LoraBase, LoraEntry, UploadedLora

router = APIRouter(tags=["loras"])


class LoraInfo(BaseModel):
    name: str
    base: str
    scale: float
    triggers: list[str] = []
    description: str = ""
    # "registry", or "key": the caller's own (private to its key).
    owner: str
    sha256: str | None = None
    bytes: int | None = None
    created_at: str | None = None

    @classmethod
    def of_registry(cls, name: str, entry: LoraEntry) -> LoraInfo:
        return cls(
            name=name,
            base=entry.base,
            scale=entry.scale,
            triggers=entry.triggers,
            description=entry.description,
            owner="registry",
            sha256=entry.sha256,
        )

    @classmethod
    def of_upload(cls, record: UploadedLora) -> LoraInfo:
        return cls(owner="key", **record.model_dump(exclude={"key"}))


class LoraList(BaseModel):
    loras: list[LoraInfo]


class LoraFromUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    url: str = Field(min_length=1, max_length=2048)
    base: LoraBase | None = None
    scale: float = Field(1.0, ge=-MAX_SCALE, le=MAX_SCALE)


@router.get("/loras", response_model=LoraList)
def list_loras(state: StateDep, owner: OwnerDep) -> LoraList:
    """The registry's adapters, then the caller's own."""
    registry = [LoraInfo.of_registry(n, e) for n, e in sorted(state.registry.loras.items())]
    own = [LoraInfo.of_upload(r) for _, r in sorted(state.loras.own(owner).items())]
    return LoraList(loras=registry + own)


@router.get("/loras/{name}", response_model=LoraInfo)
def get_lora(name: str, state: StateDep, owner: OwnerDep) -> LoraInfo:
    if name in state.registry.loras:
        return LoraInfo.of_registry(name, state.registry.loras[name])
    own = state.loras.own(owner)
    if name not in own:
        raise LoraNotFound(f"no adapter {name!r}")
    return LoraInfo.of_upload(own[name])


@router.post("/loras", status_code=201, response_model=LoraInfo)
async def add_lora(request: Request, state: StateDep, owner: OwnerDep) -> LoraInfo:
    """A safetensors LoRA for this key alone: multipart (`name`, `file`, optional `base`,
    `scale`), or JSON `{name, url}` (https, or s3 with the storage's credentials)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        name, data, base, scale = await _from_form(request, state.settings.lora_max_bytes)
    else:
        body = _json_body(await request.body())
        name, base, scale = body.name, body.base, body.scale
        data = await run_in_threadpool(fetch_lora, body.url, state.settings, state.storage)
    record = await run_in_threadpool(state.loras.add, owner, name, data, base, scale)
    return LoraInfo.of_upload(record)


@router.delete("/loras/{name}", status_code=204)
async def delete_lora(name: str, state: StateDep, owner: OwnerDep) -> Response:
    """Forget one of the caller's adapters (jobs already queued with it still run)."""
    if name in state.registry.loras:
        raise Forbidden(f"{name!r} is a registry adapter: the operator's to remove")
    await run_in_threadpool(state.loras.delete, owner, name)
    return Response(status_code=204)


async def _from_form(request: Request, max_bytes: int) -> tuple[str, bytes, Any, float]:
    # Starlette spools an upload to disk past 1 MiB; the size cap is LORA_MAX_BYTES,
    # checked on what was sent (a larger upload is read only this far).
    async with request.form(max_part_size=max_bytes + 1) as form:
        upload, name = form.get("file"), form.get("name")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("send the adapter's .safetensors as the form field `file`", "file")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("name the adapter (form field `name`)", "name")
        data = await upload.read(max_bytes + 1)
        base = form.get("base") or None
        if base is not None and base not in LORA_BASES:
            raise InvalidRequest(f"base {base!r}: one of {', '.join(LORA_BASES)}", "base")
        raw_scale = form.get("scale")
        try:
            scale = float(raw_scale) if isinstance(raw_scale, str) and raw_scale else 1.0
        except ValueError:
            raise InvalidRequest(f"scale {raw_scale!r} is not a number", "scale") from None
        if abs(scale) > MAX_SCALE:
            raise InvalidRequest(f"scale must be within ±{MAX_SCALE:g}", "scale")
        return name, data, base, scale


def _json_body(raw: bytes) -> LoraFromUrl:
    # Read here, not by FastAPI: the same path takes a multipart form. Errors go
    # through the app's own handler, as a body FastAPI had checked would.
    try:
        return LoraFromUrl.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
