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

from redis.asyncio import Redis as AsyncRedis

from shared.constants import KEY_PREFIX
from shared.errors import InvalidRequest
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
    def __init__(self, client: AsyncRedis, ttl_s: int):
        self.client = client
        self.ttl_s = ttl_s

    async def next_number(self) -> int:
        return int(await self.client.incr(_NUMBER))

    async def save(self, record: PromptRecord) -> None:
        index = _PROMPTS + record.owner
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(_PROMPT + record.prompt_id, json.dumps(asdict(record)), ex=self.ttl_s)
            pipe.zadd(index, {record.prompt_id: record.number})
            # Ids of prompts gone with their TTL are dropped when read (load()).
            pipe.zremrangebyrank(index, 0, -(MAX_LISTED * 5) - 1)
            pipe.expire(index, self.ttl_s)
            if record.client_id:
                client = _client_key(record.owner, record.client_id)
                pipe.sadd(client, record.prompt_id)
                pipe.expire(client, self.ttl_s)
            await pipe.execute()

    async def client_prompts(self, owner: str, client_id: str) -> set[str]:
        """The prompts `owner` queued for its client `client_id` (its /ws messages)."""
        return {reply_text(i) for i in await self.client.smembers(_client_key(owner, client_id))}

    async def exists(self, prompt_id: str) -> bool:
        return bool(await self.client.exists(_PROMPT + prompt_id))

    async def load(self, prompt_id: str, owner: str) -> PromptRecord | None:
        """The prompt, if it is `owner`'s (another key's is as good as absent)."""
        raw = await self.client.get(_PROMPT + prompt_id)
        if raw is None:
            return None
        record = PromptRecord(**json.loads(raw))
        return record if record.owner == owner else None

    async def recent(self, owner: str, limit: int = MAX_LISTED) -> list[PromptRecord]:
        """The key's prompts, newest first."""
        ids = await self.client.zrevrange(_PROMPTS + owner, 0, limit - 1)
        return await self.load_many([reply_text(i) for i in ids], owner)

    async def load_many(self, prompt_ids: list[str], owner: str) -> list[PromptRecord]:
        """Those of the prompts that still exist and are `owner`'s, in order (one read)."""
        if not prompt_ids:
            return []
        raws = await self.client.mget([_PROMPT + prompt_id for prompt_id in prompt_ids])
        records = [PromptRecord(**json.loads(raw)) for raw in raws if raw is not None]
        return [record for record in records if record.owner == owner]

    async def put_upload(self, owner: str, name: str, data: bytes) -> None:
        """Keep an uploaded image of `owner` for JOB_TTL_S (a new one of the same name
        replaces it); at most MAX_UPLOADS_PER_KEY at once."""
        index = _UPLOADS + owner
        now = time.time()
        await self.client.zremrangebyscore(index, 0, now)
        new = await self.client.zscore(index, name) is None
        if new and await self.client.zcard(index) >= MAX_UPLOADS_PER_KEY:
            raise InvalidRequest(
                f"this key holds {MAX_UPLOADS_PER_KEY} uploads already; they expire "
                f"{self.ttl_s} s after their upload",
                "image",
            )
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(_upload_key(owner, name), data, ex=self.ttl_s)
            pipe.zadd(index, {name: now + self.ttl_s})
            pipe.expire(index, self.ttl_s)
            await pipe.execute()

    async def upload(self, owner: str, name: str) -> bytes | None:
        data = await self.client.get(_upload_key(owner, name))
        return data if isinstance(data, bytes) else None


def upload_name(subfolder: str, filename: str) -> str:
    """An upload's name as LoadImage names it: `subfolder/filename` (or the filename)."""
    return f"{subfolder.strip('/')}/{filename}" if subfolder.strip("/") else filename


def _client_key(owner: str, client_id: str) -> str:
    return f"{_CLIENT}{owner}:{client_id}"


def _upload_key(owner: str, name: str) -> str:
    return f"{_UPLOAD}{owner}:{name}"
