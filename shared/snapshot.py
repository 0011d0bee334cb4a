"""A job as it stands and what its public view needs, read in one round trip.

A poll (GET /jobs/{id}) needs the record, the queue position of a queued job
and the delivery log of a job with a webhook; which of the latter it needs is
known only from the record. One Lua script reads all three, so a poll costs one
round trip instead of two. It also joins the record's fields (each stored as
JSON) into one JSON object on the server: the client then parses one string and
validates it in one pass, instead of a reply of some fifty strings.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from shared import lua
from shared.jobs import JobRecord

# shared/lua/read.lua: the record, a queued job's position and ETA (the
# scheduler's, shared/lua/lib/sched.lua), a webhook's delivery log.
READ_SCRIPT = lua.script("read")


class JobSnapshot(NamedTuple):
    record: JobRecord
    # Jobs that will run before it; None unless queued.
    queue_position: int | None
    # The raw delivery log (shared.webhooks.webhook_info reads it); empty without a webhook.
    webhook_log: list[Any]
    # Estimated seconds until it starts; None unless queued, or when no worker can run it.
    eta_s: float | None = None


def read_call(job_id: str, half_life_s: float) -> lua.Call:
    """READ_SCRIPT for `job_id`."""
    return READ_SCRIPT.call(args={"job": job_id, "half_life": repr(half_life_s)})


def decode_snapshot(reply: Any) -> JobSnapshot | None:
    """READ_SCRIPT's reply as a snapshot; None when the record does not exist."""
    if not reply:
        return None
    document, rank, eta, log = reply
    return JobSnapshot(
        record=JobRecord.model_validate_json(document),
        queue_position=int(rank) if rank is not None else None,
        webhook_log=log or [],
        eta_s=round(float(eta), 1) if eta is not None else None,
    )
