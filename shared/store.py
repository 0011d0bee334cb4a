"""The job store: job records in Redis, and the one place statuses change.

A record is a Redis hash with one JSON-encoded field per attribute, so a
progress write touches one small field instead of rewriting the whole job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import redis
from pydantic_core import to_json

from shared import lua
from shared.constants import (
    DEFAULT_FAIR_SHARE_HALF_LIFE_S,
    JOB_INPUT_KEY_PREFIX,
    JOB_KEY_PREFIX,
    JOBS_INDEX_KEY,
    PRIORITIES,
    RUNNING_KEY,
    WAITING_KEY_PREFIX,
)
from shared.errors import InvalidTransition, JobNotFound
from shared.jobs import JobRecord, JobStatus, utcnow
from shared.keypolicy import DEFAULT_POLICY, KeyPolicy
from shared.queue import token_message
from shared.redis_replies import reply_text
from shared.replica_acks import ReplicaAck


def job_key(job_id: str) -> str:
    return JOB_KEY_PREFIX + job_id


def input_key(job_id: str) -> str:
    return JOB_INPUT_KEY_PREFIX + job_id


def mask_key(job_id: str) -> str:
    # Beside the init image, under the same prefix (and the same TTL).
    return JOB_INPUT_KEY_PREFIX + job_id + ":mask"


def waiting_key(queue: str) -> str:
    return WAITING_KEY_PREFIX + queue


def owner_index_key(owner: str) -> str:
    # One index per owner beside the global one: GET /jobs lists a caller's
    # jobs without reading everyone else's.
    return f"{JOBS_INDEX_KEY}:{owner}"


# Scores of one priority's waiting jobs lie in [rank * PRIORITY_BAND, (rank + 1) *
# PRIORITY_BAND): arrival times in ms stay below it until the year 2286.
PRIORITY_BAND = 10**13


def waiting_score(record: JobRecord) -> float:
    # Priority first, then arrival: a high job is ahead of every normal one.
    return PRIORITIES[record.priority] * PRIORITY_BAND + record.created_at.timestamp() * 1000


def _encode(fields: Mapping[str, Any]) -> dict[Any, Any]:
    # pydantic's encoder: models, datetimes and plain values alike, and about three
    # times as fast as json.dumps on a record's two dozen small values.
    return {name: to_json(value) for name, value in fields.items()}


# shared/lua/create.lua, store_job.lua: store a new job and queue it with the scheduler.
_CREATE = lua.script("create")
_TRANSITION = lua.script("transition")
_POSITION = lua.script("position")
_UPDATE = lua.script("update_job")
_LIST = lua.script("list_jobs")
# The most index entries one listing looks at: a filter few jobs match answers a
# short page and a cursor, rather than holding Redis while it reads the index.
LIST_SCAN_MAX = 5000
_SET_PROGRESS = lua.script("set_progress")


def store_job_names(
    record: JobRecord,
    init_image: bytes | None,
    mask: bytes | None,
    ttl_s: int,
    half_life_s: float = DEFAULT_FAIR_SHARE_HALF_LIFE_S,
    policy: KeyPolicy = DEFAULT_POLICY,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """KEYS and ARGV by name of store_job.lua for a new job of a key with `policy`."""
    keys = {
        "record": job_key(record.id),
        "input": input_key(record.id),
        "mask": mask_key(record.id),
        "jobs_index": JOBS_INDEX_KEY,
        "owner_index": owner_index_key(record.owner),
        "waiting": waiting_key(record.queue),
    }
    args = {
        "job": record.id,
        "ttl": ttl_s,
        "created": repr(record.created_at.timestamp() * 1000),
        "half_life": repr(half_life_s),
        "weight": repr(policy.weight),
        "max_running": policy.max_running or 0,
        "init_image": init_image or b"",
        "mask_image": mask or b"",
        "fields": [item for pair in encode_record(record).items() for item in pair],
    }
    return keys, args


def list_call(
    limit: int, cursor: float | None, status: JobStatus | None, owner: str | None
) -> lua.Call:
    """list_jobs.lua for a page of JobStore.list (any client runs it)."""
    keys = {"index": owner_index_key(owner) if owner is not None else JOBS_INDEX_KEY}
    args = {
        "limit": limit,
        "before": f"({cursor}" if cursor is not None else "+inf",
        "status": status.value if status is not None else "",
        "owner": owner or "",
        "scan_max": LIST_SCAN_MAX,
    }
    return _LIST.call(keys, args)


def decode_listing(reply: list[Any]) -> tuple[list[JobRecord], float | None]:
    """list_jobs.lua's reply: the records, and the next page's cursor (None: no more)."""
    cursor, *documents = reply
    records = [JobRecord.model_validate_json(document) for document in documents]
    return records, float(cursor) if cursor is not None else None


def encode_record(record: JobRecord) -> dict[str, bytes]:
    """The record as its hash: one JSON value per attribute."""
    return _encode(record.model_dump(mode="json"))


# Told of job events: "start", "progress" and "completed" (any terminal status).
EventListener = Callable[["JobStore", JobRecord, str], None]


class JobStore:
    def __init__(
        self,
        client: redis.Redis,
        ttl_s: int,
        on_event: EventListener | None = None,
        replica_ack: ReplicaAck | None = None,
        half_life_s: float = DEFAULT_FAIR_SHARE_HALF_LIFE_S,
    ):
        self.redis = client
        self.ttl_s = ttl_s
        self.on_event = on_event
        # REDIS_MIN_REPLICAS_ACK: a status change is done once replicas hold it.
        self.replica_ack = replica_ack
        # FAIR_SHARE_HALF_LIFE_S: how fast a key's usage fades (the scheduler's).
        self.half_life_s = half_life_s
        # Registered once: EVALSHA per write instead of the script text.

    def create(
        self,
        record: JobRecord,
        init_image: bytes | None = None,
        mask: bytes | None = None,
        policy: KeyPolicy = DEFAULT_POLICY,
    ) -> int:
        """Store a new job (and its init image and mask) with the retention TTL, and
        queue it (no wake-up token: the API's submission pushes those).

        Returns its queue position as it was stored (jobs that will run before it).
        """
        keys, args = store_job_names(record, init_image, mask, self.ttl_s, self.half_life_s, policy)
        return int(_CREATE.call(keys, args).run(self.redis))

    def get(self, job_id: str) -> JobRecord:
        record = self.get_or_none(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return record

    def get_many(self, job_ids: list[str]) -> list[JobRecord]:
        """The records of `job_ids` that still exist, in order (one round trip)."""
        return [record for record in self._get_page(job_ids) if record is not None]

    def _get_page(self, job_ids: list[str]) -> list[JobRecord | None]:
        """The records of `job_ids` in one round trip, None where one expired."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(job_key(job_id))
        return [decode_record(raw) if raw else None for raw in pipe.execute()]

    def get_input(self, job_id: str) -> bytes | None:
        return self.redis.get(input_key(job_id))  # type: ignore[return-value]

    def get_mask(self, job_id: str) -> bytes | None:
        return self.redis.get(mask_key(job_id))  # type: ignore[return-value]

    def delete(self, job_id: str) -> None:
        self.redis.delete(job_key(job_id), input_key(job_id), mask_key(job_id))

    def transition(self, job_id: str, target: JobStatus, **fields: Any) -> JobRecord:
        """Move a job to `target`, setting `fields` with it, if the move is allowed.

        One script (shared/lua/transition.lua) checks the move and keeps every
        index the job lives in with it: the waiting set and the scheduler's lines,
        reservations, its key's busy set, the running index and wake-up tokens.
        Raises InvalidTransition when the job's current status cannot reach
        `target` (for example a worker finishing a job a client just canceled),
        and JobNotFound when the record is gone. With `replica_ack`, returns once
        enough replicas hold the change, else raises NotReplicated (the change is
        made on the master: a retry finds the job at `target` already).
        """
        changes = {"status": target, **_timestamps(target), **fields}
        allowed = ",".join(s.value for s in JobStatus if s.can_move_to(target))
        worker = (fields.get("worker") or "") if target is JobStatus.RUNNING else ""
        token = b""
        if target is JobStatus.QUEUED:
            queue = self.redis.hget(job_key(job_id), "queue")
            if queue is None:
                raise JobNotFound(job_id)
            token = token_message(json.loads(queue)).payload
        args = {
            "job": job_id,
            "target": target.value,
            "allowed": allowed,
            "half_life": repr(self.half_life_s),
            "worker": worker,
            "token": token,
            "fields": [item for pair in _encode(changes).items() for item in pair],
        }
        answer = _TRANSITION.call(args=args).run(self.redis)
        verdict = reply_text(answer[0])
        if verdict == "missing":
            raise JobNotFound(job_id)
        if verdict == "refused":
            current = reply_text(answer[1])
            raise InvalidTransition(f"job {job_id} is {current}; it cannot become {target}")
        updated = JobRecord.model_validate_json(answer[1])
        self.confirm_replicated(f"job {job_id} became {target}")
        self._emit(updated, _event_of(target))
        return updated

    def queue_position(self, record: JobRecord) -> int | None:
        """How many jobs will run before a queued job (None unless queued)."""
        if record.status is not JobStatus.QUEUED:
            return None
        args = {"job": record.id, "half_life": repr(self.half_life_s)}
        rank, _ = _POSITION.call(args=args).run(self.redis)
        return int(rank) if rank is not None else None

    def list(
        self,
        limit: int,
        cursor: float | None = None,
        status: JobStatus | None = None,
        owner: str | None = None,
    ) -> tuple[list[JobRecord], float | None]:
        """Jobs newest first, `limit` at most, created before `cursor` (ms since epoch),
        and the cursor of the next page (None at the end).

        With `owner`, only the jobs that caller submitted; without, everyone's.
        """
        return decode_listing(list_call(limit, cursor, status, owner).run(self.redis))

    def running_jobs(self) -> dict[str, str]:
        """Running job id -> the worker running it."""
        raw: dict[bytes, bytes] = self.redis.hgetall(RUNNING_KEY)  # type: ignore[assignment]
        return {k.decode(): v.decode() for k, v in raw.items()}

    def forget_running(self, job_id: str) -> None:
        self.redis.hdel(RUNNING_KEY, job_id)

    def get_or_none(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(job_key(job_id))
        return decode_record(raw) if raw else None

    def set_progress(self, job_id: str, progress: float) -> None:
        """Write a running job's progress, counted among its events (api.event_stream)."""
        keys = {"record": job_key(job_id)}
        _SET_PROGRESS.call(keys, {"progress": to_json(progress)}).run(self.redis)

    def report_progress(self, record: JobRecord, progress: float) -> None:
        """Write a running job's progress and tell the listener."""
        self.set_progress(record.id, progress)
        self._emit(record.model_copy(update={"progress": progress}), "progress")

    def confirm_replicated(self, what: str) -> None:
        """With `replica_ack`: return once replicas hold every write so far (else NotReplicated)."""
        if self.replica_ack is not None:
            self.replica_ack.confirm(self.redis, what)

    def announce(self, record: JobRecord) -> None:
        """Tell the listener of `record`'s status again (its change was written, and
        the first telling may not have happened: a lost reply, a failover)."""
        self._emit(record, _event_of(record.status))

    def _emit(self, record: JobRecord, event: str | None) -> None:
        if event is not None and self.on_event is not None:
            self.on_event(self, record, event)

    def update(self, job_id: str, **fields: Any) -> None:
        """Set fields of an existing record without a status change.

        HSET on a record that just expired would resurrect a fragment of it,
        so the write happens only if the key exists (one atomic script).
        """
        encoded = [item for pair in _encode(fields).items() for item in pair]
        _UPDATE.call({"record": job_key(job_id)}, {"fields": encoded}).run(self.redis)


def _event_of(target: JobStatus) -> str | None:
    if target is JobStatus.RUNNING:
        return "start"
    return "completed" if target.is_terminal() else None


def _timestamps(target: JobStatus) -> dict[str, Any]:
    if target is JobStatus.RUNNING:
        return {"started_at": utcnow(), "finished_at": None}
    if target.is_terminal():
        return {"finished_at": utcnow()}
    return {}


def decode_record(raw: Mapping[Any, Any]) -> JobRecord:
    """A job record from its Redis hash (HGETALL's answer)."""
    # Each field is stored as JSON: joined they are one JSON object, parsed and
    # validated in one pass (several times faster than json.loads per field).
    document = b"{" + b",".join(b'"' + k + b'":' + v for k, v in raw.items()) + b"}"
    return JobRecord.model_validate_json(document)
