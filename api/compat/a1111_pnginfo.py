"""A1111's PNG Info under /sdapi/v1: the parameters an image carries, read back.

darkroom's workers write them into every PNG they store (worker.png_metadata),
as A1111 does; `png-info` answers them as A1111's does, for any image: the
`parameters` text (A1111's infotext), parsed, and every other text chunk
(darkroom's own JSON under `darkroom`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import OwnerDep
from api.compat import A1111_PREFIX
from api.compat.images import open_image
from shared.infotext import PARAMETERS_CHUNK, parse
from shared.png import text_chunks

router = APIRouter(prefix=A1111_PREFIX, tags=["automatic1111"], include_in_schema=False)


class PNGInfoRequest(BaseModel):
    image: str  # base64, or a data: URL


class PNGInfoAnswer(BaseModel):
    info: str  # the `parameters` chunk ("" when there is none)
    items: dict[str, Any]  # every other text chunk
    parameters: dict[str, Any]  # `info` parsed, as A1111's parse_generation_parameters


@router.post("/png-info")
async def png_info(body: PNGInfoRequest, owner: OwnerDep) -> PNGInfoAnswer:
    """The generation parameters an image carries: its `parameters` text (A1111's
    infotext, which darkroom writes into every image), parsed, and its other text
    chunks. An image that is not one is refused (422)."""
    chunks = await run_in_threadpool(_text_chunks, body.image)
    info = chunks.pop(PARAMETERS_CHUNK, "")
    return PNGInfoAnswer(info=info, items=chunks, parameters=parse(info))


def _text_chunks(value: str) -> dict[str, str]:
    return text_chunks(open_image(value, "image"))
