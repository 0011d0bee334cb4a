"""A new job in one Redis round trip: Idempotency-Key, rate limits, record and broker message.

One Lua script claims the Idempotency-Key, checks and counts the caller's rate
limits, stores the job (shared.store's store_job, as JobStore.create does) and
pushes its Celery message (shared.queue.job_message) onto the broker list.
Redis runs a script atomically: a 202 is answered only once the job is both
stored and queued, a refusal (a 429, a replay) writes nothing, and a Redis that
cannot be reached leaves nothing half-made to clean up.

With REDIS_MIN_REPLICAS_ACK, a WAIT follows the script on its connection; when
too few replicas confirm in time, a second script takes the job back (record,
indexes, broker message, Idempotency-Key, rate-limit entries), or asks a worker
that took it meanwhile to cancel it, and the client gets a 503.
"""

from __future__ import annotations

from typing import Any

from api import ratelimit
from shared import lua
from shared.constants import CANCEL_KEY_PREFIX, IDEMPOTENCY_TTL_S
from shared.errors import NotReplicated
from shared.jobs import JobRecord
from shared.keypolicy import DEFAULT_POLICY, KeyPolicy
from shared.multiplexed import MultiplexedRedis
from shared.queue import token_message
from shared.replica_acks import AsyncMasterCheck, ReplicaAck
from shared.settings import Settings
from shared.store import store_job_names

# The script's verdicts beyond the rate limits' (ADMITTED, TOO_FAST, TOO_MANY_ACTIVE).
REPLAY = 3

# shared/lua/submit.lua, with the files that name the rest of its KEYS and ARGV.
_SUBMIT = lua.script("submit")
# shared/lua/unsubmit.lua: takes back what _SUBMIT made, given the same names.
_UNSUBMIT = lua.script("unsubmit")


def submit_call(
    record: JobRecord,
    init_image: bytes | None,
    mask: bytes | None,
    settings: Settings,
    idempotency: tuple[str, str] | None,
    limits: ratelimit.Limits | None = None,
    policy: KeyPolicy = DEFAULT_POLICY,
) -> lua.Call:
    """The script for a new job; `idempotency`: the key's name and entry;
    `limits` and `policy`: the owner's (default: the server-wide ones)."""
    store_keys, store_args = store_job_names(
        record, init_image, mask, settings.job_ttl_s, settings.fair_share_half_life_s, policy
    )
    limits = limits or ratelimit.Limits.of(settings, policy)
    rate_keys, rate_args = ratelimit.rate_names(limits, settings, record.owner, record.id)
    # The job's wake-up token (docs/scheduling.md): an idle worker consuming the
    # queue takes it and asks the scheduler which job to run.
    message = token_message(record.queue, record.id)
    key_name, key_entry = idempotency or ("", "")
    keys = {**store_keys, **rate_keys, "idempotency": key_name, "broker": message.list_name}
    args = {
        **store_args,
        **rate_args,
        "claim": key_entry,
        "claim_ttl": IDEMPOTENCY_TTL_S,
        "message": message.payload,
    }
    return _SUBMIT.call(keys, args)


async def run(
    client: MultiplexedRedis,
    call: lua.Call,
    replica_ack: ReplicaAck | None = None,
    master_check: AsyncMasterCheck | None = None,
) -> tuple[int, Any]:
    """Run the script: (verdict, queue position, ms to wait or the key's entry).

    With `replica_ack`, an admitted job that too few replicas confirm, or (with
    `master_check`, under Sentinel) that a master being failed over took, is
    taken back and NotReplicated raised.
    """
    if replica_ack is None:
        verdict, value = await client.run_script(call.lua, call.keys, call.args)
        return int(verdict), value
    (verdict, value), acknowledged, server = await client.run_script_then(
        call.lua, call.keys, call.args, "WAIT", replica_ack.replicas, replica_ack.timeout_ms
    )
    if int(verdict) != ratelimit.ADMITTED:
        return int(verdict), value
    try:
        replica_ack.check(int(acknowledged), "the job")
        if master_check is not None and server is not None:
            replica_ack.refuse_if(await master_check(server), "the job")
    except NotReplicated as refusal:
        job_id = call.named_args["job"]
        undo = _UNSUBMIT.call(
            {**call.named_keys, "cancel": CANCEL_KEY_PREFIX + job_id}, call.named_args
        )
        removed = await client.run_script(undo.lua, undo.keys, undo.args)
        outcome = "it was not accepted" if removed else f"job {job_id} is being canceled"
        raise NotReplicated(f"{refusal}; {outcome}") from None
    return int(verdict), value
