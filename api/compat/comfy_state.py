"""A ComfyUI prompt as its jobs stand: its status, outputs and history entry.

ComfyUI lists a prompt in its history once it ran (success or error), with the
images of each output node by file name; `/view` serves a name back. darkroom's
names carry the job and image they are: `<filename_prefix>_<job id>_<index>_.png`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from api.compat.comfy_store import PromptRecord
from api.reads import fetch_records
from api.state import AppState
from shared.jobs import JobRecord, JobStatus

Status = Literal["pending", "running", "success", "error", "interrupted"]
_FILENAME = re.compile(r"^.*_(?P<job>[0-9a-f]{32})_(?P<index>\d{1,3})_\.png$")


@dataclass(frozen=True)
class PromptState:
    record: PromptRecord
    jobs: list[JobRecord]

    @property
    def status(self) -> Status:
        statuses = {job.status for job in self.jobs}
        if JobStatus.FAILED in statuses:
            return "error"
        if JobStatus.CANCELED in statuses:
            return "interrupted"
        if statuses == {JobStatus.SUCCEEDED}:
            return "success"
        return (
            "running"
            if JobStatus.RUNNING in statuses or JobStatus.SUCCEEDED in statuses
            else "pending"
        )

    @property
    def finished(self) -> bool:
        return self.status in ("success", "error", "interrupted")

    @property
    def progress(self) -> float:
        return sum(job.progress for job in self.jobs) / len(self.jobs)

    @property
    def total_steps(self) -> int:
        params = self.jobs[0].params
        return params.steps + (params.hires.steps if params.hires else 0)

    def failure(self) -> JobRecord | None:
        return next(
            (j for j in self.jobs if j.status in (JobStatus.FAILED, JobStatus.CANCELED)), None
        )

    def outputs(self) -> dict[str, dict[str, Any]]:
        """Each output node's images, as ComfyUI's history and `executed` list them."""
        if self.status != "success":
            return {}
        return {
            node: {
                "images": [
                    self.file(node, job, index)
                    for job in self.jobs
                    for index in range(len(job.images))
                ]
            }
            for node in self.record.outputs
        }

    def file(self, node: str, job: JobRecord, index: int) -> dict[str, str]:
        prefix = self.record.prefixes.get(node, "ComfyUI").replace("/", "_")
        return {
            "filename": f"{prefix}_{job.id}_{index}_.png",
            "subfolder": "",
            "type": self.record.outputs[node],
        }

    def history_entry(self) -> dict[str, Any]:
        record = self.record
        stamp = int(record.created * 1000)
        messages: list[list[Any]] = [
            ["execution_start", {"prompt_id": record.prompt_id, "timestamp": stamp}],
            ["execution_cached", {"nodes": [], "prompt_id": record.prompt_id, "timestamp": stamp}],
        ]
        end = _end_stamp(self.jobs)
        if self.status == "success":
            messages.append(
                ["execution_success", {"prompt_id": record.prompt_id, "timestamp": end}]
            )
        elif self.status == "error":
            messages.append(["execution_error", self.error_message()])
        else:
            messages.append(["execution_interrupted", self.interrupted_message()])
        return {
            "prompt": record.queue_entry(),
            "outputs": self.outputs(),
            "status": {
                "status_str": "success" if self.status == "success" else "error",
                "completed": self.status == "success",
                "messages": messages,
            },
            "meta": {
                node: {
                    "node_id": node,
                    "display_node": node,
                    "parent_node": None,
                    "real_node_id": node,
                }
                for node in record.outputs
            },
            # darkroom's own: the jobs behind the prompt, and the seed as ComfyUI sent it.
            "darkroom": {"job_ids": record.job_ids, "seed": record.seed},
        }

    def error_message(self) -> dict[str, Any]:
        failed = self.failure()
        error = failed.error if failed is not None else None
        return {
            "prompt_id": self.record.prompt_id,
            "node_id": self.record.sampler_node,
            "node_type": self.record.workflow[self.record.sampler_node]["class_type"],
            "executed": [],
            "exception_message": error.message if error else "the job failed",
            "exception_type": error.type if error else "generation_error",
            "traceback": [],
            "current_inputs": {},
            "current_outputs": {},
            "timestamp": _end_stamp(self.jobs),
        }

    def interrupted_message(self) -> dict[str, Any]:
        return {
            "prompt_id": self.record.prompt_id,
            "node_id": self.record.sampler_node,
            "node_type": self.record.workflow[self.record.sampler_node]["class_type"],
            "executed": [],
            "timestamp": _end_stamp(self.jobs),
        }


async def prompt_states(state: AppState, records: list[PromptRecord]) -> list[PromptState]:
    """The prompts with their jobs as they stand, every job read in one round trip;
    a prompt whose jobs are gone (expired) is left out."""
    wanted = [job_id for record in records for job_id in record.job_ids]
    if not wanted:
        return []
    jobs = {job.id: job for job in await fetch_records(state, wanted)}
    return [
        PromptState(record, [jobs[job_id] for job_id in record.job_ids])
        for record in records
        if all(job_id in jobs for job_id in record.job_ids)
    ]


async def prompt_state(state: AppState, record: PromptRecord) -> PromptState | None:
    """The prompt with its jobs as they stand; None once a job is gone (expired)."""
    found = await prompt_states(state, [record])
    return found[0] if found else None


def parse_filename(filename: str) -> tuple[str, int] | None:
    """The job id and image index an output file name stands for."""
    match = _FILENAME.match(filename)
    return (match["job"], int(match["index"])) if match else None


def _end_stamp(jobs: list[JobRecord]) -> int:
    ends = [job.finished_at.timestamp() for job in jobs if job.finished_at is not None]
    return int(max(ends) * 1000) if ends else 0
