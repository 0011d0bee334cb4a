"""ComfyUI's `/ws`: the messages of the prompts a client queued, as ComfyUI sends them.

A client connects with `?clientId=...` and queues prompts with that `client_id`;
the socket then carries, for each of its prompts, `execution_start`,
`execution_cached`, `executing` (the KSampler), `progress` (step of steps),
binary preview frames (ComfyUI's: event 1, JPEG), `executed` per output node,
then `execution_success` (or `execution_error`, `execution_interrupted`) and
`executing` with node null, which clients wait for. A `clientId` is scoped to
the key that opened the socket: another key queueing under the same id sends
it nothing. With API keys on, the handshake needs `Authorization: Bearer`
(Open WebUI sends it); a socket without one is closed (1008).

The socket polls Redis for its prompts (every POLL_S): the jobs are written by
workers on other hosts, and a poll per open socket is what `GET /jobs/{id}/events`
costs too. While a prompt runs, the socket marks its jobs watched, so the
workers make previews for it.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, WebSocket
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api.compat.comfy_state import PromptState, prompt_states
from api.compat.comfyui import comfy_store
from api.state import AppState
from shared.apikeys import ANONYMOUS, KeyRing
from shared.jobs import JobStatus
from shared.previews import Watching, preview_after

router = APIRouter(include_in_schema=False)

POLL_S = 0.25
# ComfyUI's binary frames: event type PREVIEW_IMAGE, then the image's format.
PREVIEW_IMAGE = 1
JPEG = 1


@dataclass
class _Followed:
    started: bool = False
    value: int = -1
    seqs: dict[str, int] = field(default_factory=dict)
    watching: dict[str, Watching] = field(default_factory=dict)


@router.websocket("/ws")
async def socket(websocket: WebSocket, clientId: str | None = None) -> None:
    state: AppState = websocket.app.state.darkroom
    owner = socket_owner(websocket, state.keys)
    if owner is None:
        await websocket.close(code=1008, reason="an API key is required: Authorization: Bearer")
        return
    await websocket.accept()
    session = _Session(state, owner, clientId or uuid.uuid4().hex, websocket)
    closed = asyncio.ensure_future(_until_closed(websocket))
    try:
        await session.start()
        while not closed.done():
            await session.step()
            await asyncio.wait({closed}, timeout=POLL_S)
    except (WebSocketDisconnect, ConnectionError):
        pass  # the client went away; its prompts run on
    finally:
        closed.cancel()


def socket_owner(websocket: WebSocket, keys: KeyRing) -> str | None:
    """The key's identity from the handshake's Bearer header (anonymous without keys)."""
    if not keys.enabled:
        return ANONYMOUS
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return keys.owner_of(token.strip())


async def _until_closed(websocket: WebSocket) -> None:
    while websocket.client_state is not WebSocketState.DISCONNECTED:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


class _Session:
    def __init__(self, state: AppState, owner: str, client_id: str, websocket: WebSocket):
        self.state = state
        self.owner = owner
        self.client_id = client_id
        self.websocket = websocket
        self.store = comfy_store(state)
        self.followed: dict[str, _Followed] = {}
        self.done: set[str] = set()

    async def start(self) -> None:
        # Prompts of this client that ended before it connected are not replayed.
        for found in await self._prompts():
            if found.finished:
                self.done.add(found.record.prompt_id)
        await self.send_status()

    async def step(self) -> None:
        for found in await self._prompts():
            await self.advance(found)

    async def _prompts(self) -> list[PromptState]:
        ids = await self.store.client_prompts(self.owner, self.client_id) - self.done
        found = await prompt_states(self.state, await self.store.load_many(list(ids), self.owner))
        # Gone (expired, or another key's): never asked for again.
        self.done |= ids - {p.record.prompt_id for p in found}
        return sorted(found, key=lambda p: p.record.number)

    async def advance(self, found: PromptState) -> None:
        prompt_id = found.record.prompt_id
        follow = self.followed.setdefault(prompt_id, _Followed())
        if found.status == "pending":
            return
        if not follow.started:
            follow.started = True
            await self.send_status()
            stamp = _now_ms()
            await self.send("execution_start", {"prompt_id": prompt_id, "timestamp": stamp})
            await self.send(
                "execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": stamp}
            )
            await self.send_executing(found.record.sampler_node, prompt_id)
        await self.send_progress(found, follow)
        if found.status == "running":
            await self.send_previews(found, follow)
            return
        await self.finish(found)

    async def send_progress(self, found: PromptState, follow: _Followed) -> None:
        total = found.total_steps
        value = min(total, round(found.progress * total))
        if value > follow.value and value > 0:
            follow.value = value
            data = {
                "value": value,
                "max": total,
                "prompt_id": found.record.prompt_id,
                "node": found.record.sampler_node,
            }
            await self.send("progress", data)

    async def send_previews(self, found: PromptState, follow: _Followed) -> None:
        for job in found.jobs:
            if job.status is not JobStatus.RUNNING:
                continue
            watching = follow.watching.setdefault(job.id, Watching(self.state.mux, job.id))
            await watching.keep()
            preview = await preview_after(self.state.mux, job.id, follow.seqs.get(job.id, 0))
            if preview is None:
                continue
            follow.seqs[job.id] = preview.seq
            for webp in preview.images:
                frame = await run_in_threadpool(_jpeg, webp)
                await self.websocket.send_bytes(struct.pack(">II", PREVIEW_IMAGE, JPEG) + frame)

    async def finish(self, found: PromptState) -> None:
        record = found.record
        self.done.add(record.prompt_id)
        if found.status == "success":
            outputs = found.outputs()
            for node, output in outputs.items():
                await self.send_executing(node, record.prompt_id)
                data = {
                    "node": node,
                    "display_node": node,
                    "output": output,
                    "prompt_id": record.prompt_id,
                }
                await self.send("executed", data)
            await self.send(
                "execution_success", {"prompt_id": record.prompt_id, "timestamp": _now_ms()}
            )
        elif found.status == "error":
            await self.send("execution_error", found.error_message())
        else:
            await self.send("execution_interrupted", found.interrupted_message())
        await self.send_executing(None, record.prompt_id)
        await self.send_status()

    async def send_executing(self, node: str | None, prompt_id: str) -> None:
        await self.send("executing", {"node": node, "display_node": node, "prompt_id": prompt_id})

    async def send_status(self) -> None:
        states = await prompt_states(self.state, await self.store.recent(self.owner))
        remaining = sum(1 for s in states if not s.finished)
        status = {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": self.client_id}
        await self.send("status", status)

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        await self.websocket.send_json({"type": kind, "data": data})


def _jpeg(webp: bytes) -> bytes:
    image = Image.open(io.BytesIO(webp)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def _now_ms() -> int:
    return int(time.time() * 1000)
