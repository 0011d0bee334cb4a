"""Live previews in Redis: who is watching a job, and the job's latest preview.

A preview costs the worker a projection (or a small decode) and a WebP encode
per image, so it is made only while someone watches: every reader of previews
(an open event stream, a streaming OpenAI call, GET /jobs/{id}/preview, an
A1111 progress poll that asks for the image) marks the job watched for
WATCH_WINDOW_S, and the worker checks that mark as the job runs.

The latest preview of a job is one hash: its sequence number (the record's
event counter, so an event stream orders it with status and progress events),
the step it shows, and one WebP per image. Only the latest is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from shared import lua
from shared.constants import KEY_PREFIX
from shared.multiplexed import MultiplexedRedis
from shared.redis_replies import reply_hash, reply_text
from shared.store import job_key

# A reader marks a job watched for this long; it marks it again while it reads.
WATCH_WINDOW_S = 5.0
# Previews are at most this many pixels on the long side (as ComfyUI's).
MAX_PREVIEW_SIDE = 512
# A preview outlives its job's last step by this much: a late reader still sees
# the last one, and a crashed worker's previews do not linger.
PREVIEW_TTL_S = 600

_WATCH_PREFIX = KEY_PREFIX + "preview-watch:"
_PREVIEW_PREFIX = KEY_PREFIX + "preview:"


def watch_key(job_id: str) -> str:
    return _WATCH_PREFIX + job_id


def preview_key(job_id: str) -> str:
    return _PREVIEW_PREFIX + job_id


@dataclass(frozen=True)
class Preview:
    """A job's latest preview: the step it shows and one WebP per image."""

    seq: int
    step: int
    steps: int
    images: list[bytes]


def decode_preview(raw: dict[Any, Any]) -> Preview | None:
    """A preview from its hash (HGETALL's answer); None for none."""
    fields = {reply_text(k): v for k, v in raw.items()}
    if "seq" not in fields:
        return None
    count = int(fields["count"])
    images = [fields[str(i)] for i in range(count) if str(i) in fields]
    return Preview(int(fields["seq"]), int(fields["step"]), int(fields["steps"]), images)


async def mark_watched(client: MultiplexedRedis, job_id: str) -> None:
    """Say that someone watches `job_id` (for the next WATCH_WINDOW_S)."""
    await client.execute("SET", watch_key(job_id), b"1", "PX", int(WATCH_WINDOW_S * 1000))


async def latest_preview(client: MultiplexedRedis, job_id: str) -> Preview | None:
    return decode_preview(reply_hash(await client.execute("HGETALL", preview_key(job_id))))


async def preview_seq(client: MultiplexedRedis, job_id: str) -> int:
    """The sequence number of the job's latest preview (0: none): cheap to poll."""
    seq = await client.execute("HGET", preview_key(job_id), "seq")
    return int(seq) if seq is not None else 0


async def preview_after(client: MultiplexedRedis, job_id: str, seq: int) -> Preview | None:
    """The job's latest preview if newer than `seq` (a poll reads one field while
    nothing new came)."""
    if await preview_seq(client, job_id) <= seq:
        return None
    preview = await latest_preview(client, job_id)
    return preview if preview is not None and preview.seq > seq else None


class Watching:
    """An open reader (an event stream, a streaming call): marks its job watched
    again whenever the last mark is a quarter of the window old."""

    REFRESH_S = WATCH_WINDOW_S / 4

    def __init__(self, client: MultiplexedRedis, job_id: str):
        self.client = client
        self.job_id = job_id
        self._marked = float("-inf")

    async def keep(self) -> None:
        if time.monotonic() - self._marked >= self.REFRESH_S:
            await mark_watched(self.client, self.job_id)
            self._marked = time.monotonic()


def watched_jobs(client: redis.Redis, job_ids: list[str]) -> set[str]:
    """Which of `job_ids` someone watches now (one pipelined round trip)."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.exists(watch_key(job_id))
    return {job_id for job_id, found in zip(job_ids, pipe.execute(), strict=True) if found}


# shared/lua/store_preview.lua: kept only while the job exists, numbered among its events.
_STORE = lua.script("store_preview")


class PreviewStore:
    """The worker's side: writes the latest preview of a job."""

    def __init__(self, client: redis.Redis, ttl_s: int = PREVIEW_TTL_S):
        self.redis = client
        self.ttl_s = ttl_s

    def store(self, job_id: str, step: int, steps: int, images: list[bytes]) -> int:
        """Keep `images` as the job's latest preview; its sequence number (0: the job is gone)."""
        numbered = [item for index, image in enumerate(images) for item in (index, image)]
        keys = {"record": job_key(job_id), "preview": preview_key(job_id)}
        args = {"ttl": self.ttl_s, "step": step, "steps": steps, "images": numbered}
        return int(_STORE.call(keys, args).run(self.redis))
