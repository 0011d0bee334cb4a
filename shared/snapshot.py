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

from shared.constants import WAITING_KEY_PREFIX
from shared.jobs import JobRecord
from shared.multiplexed import LuaScript
from shared.store import job_key
from shared.webhooks import log_key

# KEYS: the record, its webhook log. ARGV: the waiting-set key prefix, the job id.
# The waiting set is named by the record's queue, so its key is made here, not
# passed in KEYS: fine on one Redis (darkroom does not run on Redis Cluster).
# Returns nil for no record, else {record as a JSON object, rank or nil, log or nil}.
_READ = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return false end
local parts, by_name = {}, {}
for i = 1, #fields, 2 do
  parts[#parts + 1] = '"' .. fields[i] .. '":' .. fields[i + 1]
  by_name[fields[i]] = fields[i + 1]
end
local rank, log = false, false
if by_name['status'] == '"queued"' then
  rank = redis.call('ZRANK', ARGV[1] .. cjson.decode(by_name['queue']), ARGV[2])
end
if by_name['webhook'] and by_name['webhook'] ~= 'null' then
  log = redis.call('LRANGE', KEYS[2], 0, -1)
end
return {'{' .. table.concat(parts, ',') .. '}', rank, log}
"""
READ_SCRIPT = LuaScript.of(_READ)


class JobSnapshot(NamedTuple):
    record: JobRecord
    # Jobs ahead of it in its queue; None unless queued.
    queue_position: int | None
    # The raw delivery log (shared.webhooks.webhook_info reads it); empty without a webhook.
    webhook_log: list[Any]


def read_call(job_id: str) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of READ_SCRIPT for `job_id`."""
    return [job_key(job_id), log_key(job_id)], [WAITING_KEY_PREFIX, job_id]


def decode_snapshot(reply: Any) -> JobSnapshot | None:
    """READ_SCRIPT's reply as a snapshot; None when the record does not exist."""
    if reply is None:
        return None
    document, rank, log = reply
    return JobSnapshot(
        record=JobRecord.model_validate_json(document),
        queue_position=int(rank) if rank is not None else None,
        webhook_log=log or [],
    )
