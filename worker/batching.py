"""Dynamic batching: queued jobs that can share a pipeline call with the one a worker was given.

The scheduler gives the worker one job (the leader). With `max_batch_size`
above 1 on its model, the worker then looks at the jobs the scheduler would
give it next (shared.scheduler's peek: its order, fair shares included) for
queued jobs with the same batch key, reserves them through the scheduler (a
job is never reserved twice) and keeps looking while the batch has room: for
`batch_window` seconds, and for as long as the device is still busy with the
call before (a batch prepared ahead fills up for free while it waits).

If the worker dies, its reservations are given back by the reaper and its
claimed jobs re-queued (they are in the running index under its name).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.hires import HiresParams
from shared.jobs import GenerationParams, JobRecord, JobStatus
from shared.scheduler import Scheduler
from shared.store import JobStore

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
    scheduler: str | None = None
    # The hires plan and tiling are the call's, as its size is.
    hires: tuple[int, int, int, float, str] | None = None
    tiling: bool = False
    # One set of LoRA adapters, at the same scales, per call.
    loras: tuple[tuple[str, float], ...] = ()

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
            scheduler=params.scheduler,
            hires=_hires_key(params.hires),
            tiling=params.tiling,
            loras=tuple((lora.cache_key, lora.scale) for lora in params.loras),
        )


def _hires_key(hires: HiresParams | None) -> tuple[int, int, int, float, str] | None:
    if hires is None:
        return None
    return (hires.width, hires.height, hires.steps, hires.strength, hires.upscaler)


@dataclass(frozen=True)
class BatchPolicy:
    max_images: int = 1
    window_s: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.max_images > 1


def may_lead(record: JobRecord, policy: BatchPolicy) -> bool:
    """Whether queued job `record`, given to a worker, may take companions."""
    # A job run before (handed back: its worker died) may have killed that worker:
    # it runs alone, so a poison job never takes healthy companions down with it
    # again. Inpainting jobs run alone: each has its own mask and composite.
    return (
        policy.enabled
        and record.attempts == 0
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


@dataclass
class CompanionFinder:
    store: JobStore
    scheduler: Scheduler
    queues: list[str]
    policy: BatchPolicy
    # Whether a job runs on the leader's model (a worker may serve several).
    same_model: Callable[[JobRecord], bool] = lambda _: True

    def gather(
        self, leader: JobRecord, worker: str, device_busy: Callable[[], bool]
    ) -> list[JobRecord]:
        """Reserve compatible queued jobs to run with `leader`; returns them (queued)."""
        key = BatchKey.of(leader.params)
        room = self.policy.max_images - leader.params.num_images
        companions: list[JobRecord] = []
        looked_at = {leader.id}
        closes = time.monotonic() + self.policy.window_s
        epoch: int | None = None
        while room > 0:
            current = self.scheduler.epoch()
            if current != epoch:  # new jobs were queued since the last look
                epoch = current
                for candidate in self._waiting(looked_at):
                    looked_at.add(candidate.id)
                    if (
                        may_join(candidate, key, room)
                        and self.same_model(candidate)
                        and self.scheduler.reserve_job(candidate.id, worker)
                    ):
                        companions.append(candidate)
                        room -= candidate.params.num_images
                        if room <= 0:
                            break
            if room <= 0 or (time.monotonic() >= closes and not device_busy()):
                break
            time.sleep(POLL_INTERVAL_S)
        return companions

    def _waiting(self, looked_at: set[str]) -> list[JobRecord]:
        """Queued jobs not looked at yet, about in the order the scheduler gives them."""
        fresh = [j for j in self.scheduler.peek(self.queues, SCAN_DEPTH) if j not in looked_at]
        return self.store.get_many(fresh)
