"""Dynamic batching: find queued jobs that can share a pipeline call with the one a worker took.

Celery hands the worker one job (the leader). With `max_batch_size` above 1
on its model, the worker then looks in the waiting sets of the queues it
consumes (the same sorted sets that give `queue_position`, so companions are
taken in priority-then-arrival order) for queued jobs with the same batch key,
claims them through the job store (a checked queued -> running transition, so
a job is never taken twice) and keeps looking for at most `batch_window`
seconds while the batch has room.

A companion's own Celery message stays on the broker; when it comes up, the
claim finds the job no longer queued and the message is dropped (one Redis
read). If the worker dies mid-batch, every claimed job is in the running index
under its name and the reaper re-queues each one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.jobs import GenerationParams, JobRecord, JobStatus
from shared.store import JobStore, waiting_key

# How many waiting jobs per queue are looked at on each pass.
SCAN_DEPTH = 64
# How often the waiting sets are read again while the window is open.
POLL_INTERVAL_S = 0.005


@dataclass(frozen=True)
class BatchKey:
    """What jobs must share to run in one pipeline call."""

    mode: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    strength: float | None
    # SDXL-style pipelines treat "no negative prompt" (zeros) differently from
    # an empty one, so jobs with and without one never share a call.
    negative: bool
    # One scheduler per call.
    sampler: str | None

    @classmethod
    def of(cls, params: GenerationParams) -> BatchKey:
        return cls(
            mode=params.mode,
            width=params.width,
            height=params.height,
            steps=params.steps,
            guidance_scale=params.guidance_scale,
            strength=params.strength if params.mode == "img2img" else None,
            negative=bool(params.negative_prompt),
            sampler=params.sampler,
        )


@dataclass(frozen=True)
class BatchPolicy:
    max_images: int = 1
    window_s: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.max_images > 1


def may_lead(record: JobRecord, policy: BatchPolicy) -> bool:
    # A job on its second attempt may have killed its worker: it runs alone,
    # so a poison job never takes healthy companions down with it again.
    # Inpainting jobs run alone: each has its own mask and composite.
    return (
        policy.enabled
        and record.attempts <= 1
        and record.params.num_images < policy.max_images
        and record.params.mode != "inpaint"
    )


def may_join(record: JobRecord, key: BatchKey, room: int) -> bool:
    return (
        record.status is JobStatus.QUEUED
        and record.attempts == 0
        and not record.cancel_requested
        and not record.past_deadline()
        and record.params.num_images <= room
        and BatchKey.of(record.params) == key
    )


# Claims a queued job for this worker: the running record, or None if it was
# taken, canceled or expired meanwhile.
Claim = Callable[[JobRecord], JobRecord | None]


@dataclass
class CompanionFinder:
    store: JobStore
    queues: list[str]
    policy: BatchPolicy

    def gather(self, leader: JobRecord, claim: Claim) -> list[JobRecord]:
        """Claim compatible queued jobs to run with `leader`; returns them (running)."""
        key = BatchKey.of(leader.params)
        room = self.policy.max_images - leader.params.num_images
        companions: list[JobRecord] = []
        looked_at = {leader.id}
        closes = time.monotonic() + self.policy.window_s
        while room > 0:
            for candidate in self._waiting(looked_at):
                looked_at.add(candidate.id)
                if not may_join(candidate, key, room):
                    continue
                claimed = claim(candidate)
                if claimed is not None:
                    companions.append(claimed)
                    room -= claimed.params.num_images
                    if room <= 0:
                        break
            if room <= 0 or time.monotonic() >= closes:
                break
            time.sleep(POLL_INTERVAL_S)
        return companions

    def _waiting(self, looked_at: set[str]) -> list[JobRecord]:
        """Queued jobs not looked at yet, in queue order (model queue first): the
        waiting sets of every queue in one round trip, the new records in another."""
        pipe = self.store.redis.pipeline(transaction=False)
        for queue in self.queues:
            pipe.zrange(waiting_key(queue), 0, SCAN_DEPTH - 1)
        pages: list[list[bytes]] = pipe.execute()
        fresh = [job_id.decode() for page in pages for job_id in page]
        return self.store.get_many([job_id for job_id in fresh if job_id not in looked_at])
