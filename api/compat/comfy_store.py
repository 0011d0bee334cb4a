"""What the ComfyUI dialect keeps in Redis: its prompts, the key's uploads, its clients.

A prompt is one or more ordinary darkroom jobs; its record holds what ComfyUI's
answers need beyond the jobs (the workflow, its number, output nodes, the
client that queued it, the seed as sent) and lives as long as the jobs do
(JOB_TTL_S). Everything is per API key: a key's history, queue and uploads are
its own, and a `clientId` is scoped to the key that opened it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from shared import lua
from shared.constants import KEY_PREFIX
from shared.errors import InvalidRequest
from shared.multiplexed import MultiplexedRedis
from shared.redis_replies import reply_text

_PROMPT = KEY_PREFIX + "comfy-prompt:"
_PROMPTS = KEY_PREFIX + "comfy-prompts:"  # per key: prompt ids by number
_NUMBER = KEY_PREFIX + "comfy-number"
_UPLOAD = KEY_PREFIX + "comfy-upload:"
_UPLOADS = KEY_PREFIX + "comfy-uploads:"  # per key: upload names by expiry
_CLIENT = KEY_PREFIX + "comfy-client:"  # per key and clientId: its prompts
# A key's uploads live at most this many at once (they are held in Redis).
MAX_UPLOADS_PER_KEY = 100
# How many of a key's prompts its history and queue look at, newest first.
MAX_LISTED = 200

# Each a script, not MULTI/EXEC or a check then a write: the API's one connection
# carries every request's commands, interleaved.
_SAVE_PROMPT = lua.script("comfy_save_prompt")
_PUT_UPLOAD = lua.script("comfy_put_upload")


@dataclass
class PromptRecord:
    prompt_id: str
    owner: str
    number: int
    job_ids: list[str]
    workflow: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: dict[str, str]  # output node id -> "output" | "temp"
    prefixes: dict[str, str]
    sampler_node: str
    seed: int  # as sent
    client_id: str | None = None
    created: float = field(default_factory=time.time)

    def queue_entry(self) -> list[Any]:
        """As ComfyUI lists a prompt in /queue and /history: [number, id, prompt,
        extra_data, outputs to execute]."""
        return [self.number, self.prompt_id, self.workflow, self.extra_data, list(self.outputs)]


class ComfyStore:
    def __init__(self, client: MultiplexedRedis, ttl_s: int):
        self.client = client
        self.ttl_s = ttl_s

    async def next_number(self) -> int:
        return int(await self.client.execute("INCR", _NUMBER))

    async def save(self, record: PromptRecord) -> None:
        client = _client_key(record.owner, record.client_id) if record.client_id else ""
        call = _SAVE_PROMPT.call(
            keys={
                "record": _PROMPT + record.prompt_id,
                "prompts": _PROMPTS + record.owner,
                "client": client,
            },
            args={
                "prompt": record.prompt_id,
                "record": json.dumps(asdict(record)),
                "number": record.number,
                "ttl": self.ttl_s,
                "listed": MAX_LISTED * 5,
            },
        )
        await self.client.run_script(call.lua, call.keys, call.args)

    async def client_prompts(self, owner: str, client_id: str) -> set[str]:
        """The prompts `owner` queued for its client `client_id` (its /ws messages)."""
        members = await self.client.execute("SMEMBERS", _client_key(owner, client_id))
        return {reply_text(i) for i in members}

    async def exists(self, prompt_id: str) -> bool:
        return bool(await self.client.execute("EXISTS", _PROMPT + prompt_id))

    async def load(self, prompt_id: str, owner: str) -> PromptRecord | None:
        """The prompt, if it is `owner`'s (another key's is as good as absent)."""
        raw = await self.client.execute("GET", _PROMPT + prompt_id)
        if raw is None:
            return None
        record = PromptRecord(**json.loads(raw))
        return record if record.owner == owner else None

    async def recent(self, owner: str, limit: int = MAX_LISTED) -> list[PromptRecord]:
        """The key's prompts, newest first."""
        ids = await self.client.execute("ZREVRANGE", _PROMPTS + owner, 0, limit - 1)
        return await self.load_many([reply_text(i) for i in ids], owner)

    async def load_many(self, prompt_ids: list[str], owner: str) -> list[PromptRecord]:
        """Those of the prompts that still exist and are `owner`'s, in order (one read)."""
        if not prompt_ids:
            return []
        raws = await self.client.execute("MGET", *(_PROMPT + prompt_id for prompt_id in prompt_ids))
        records = [PromptRecord(**json.loads(raw)) for raw in raws if raw is not None]
        return [record for record in records if record.owner == owner]

    async def put_upload(self, owner: str, name: str, data: bytes) -> None:
        """Keep an uploaded image of `owner` for JOB_TTL_S (a new one of the same name
        replaces it); at most MAX_UPLOADS_PER_KEY at once."""
        now = time.time()
        call = _PUT_UPLOAD.call(
            keys={"upload": _upload_key(owner, name), "uploads": _UPLOADS + owner},
            args={
                "name": name,
                "data": data,
                "now": now,
                "expires": now + self.ttl_s,
                "ttl": self.ttl_s,
                "max_uploads": MAX_UPLOADS_PER_KEY,
            },
        )
        if not await self.client.run_script(call.lua, call.keys, call.args):
            raise InvalidRequest(
                f"this key holds {MAX_UPLOADS_PER_KEY} uploads already; they expire "
                f"{self.ttl_s} s after their upload",
                "image",
            )

    async def upload(self, owner: str, name: str) -> bytes | None:
        data = await self.client.execute("GET", _upload_key(owner, name))
        return data if isinstance(data, bytes) else None


def upload_name(subfolder: str, filename: str) -> str:
    """An upload's name as LoadImage names it: `subfolder/filename` (or the filename)."""
    return f"{subfolder.strip('/')}/{filename}" if subfolder.strip("/") else filename


def _client_key(owner: str, client_id: str) -> str:
    return f"{_CLIENT}{owner}:{client_id}"


def _upload_key(owner: str, name: str) -> str:
    return f"{_UPLOAD}{owner}:{name}"
