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
from shared.multiplexed import LuaScript, MultiplexedRedis
from shared.queue import token_message
from shared.replica_acks import AsyncMasterCheck, ReplicaAck
from shared.settings import Settings
from shared.store import STORE_JOB_LUA, store_job_call

# The script's verdicts beyond the rate limits' (ADMITTED, TOO_FAST, TOO_MANY_ACTIVE).
REPLAY = 3

# KEYS[1..6]: store_job's; KEYS[7..8]: the rate limits'; KEYS[9]: the Idempotency-Key
# ('' without one); KEYS[10]: the broker list.
# ARGV[1..5]: the rate limits'; ARGV[6]: the key's entry ('' without one); ARGV[7]:
# its TTL (s); ARGV[8]: the broker message; ARGV[9..]: store_job's.
# Returns {ADMITTED, queue position}, a refusal {verdict, ms until a slot frees},
# or {REPLAY, the key's entry}: then the earlier request's job is the answer.
_SUBMIT = """
if ARGV[6] ~= '' then
  local earlier = redis.call('GET', KEYS[9])
  if earlier then return {3, earlier} end
end
local refused, now_ms = rate_check(6, 0)
if refused then return refused end
-- Admitted: only writes from here on, none of which can be refused.
if ARGV[6] ~= '' then redis.call('SET', KEYS[9], ARGV[6], 'EX', ARGV[7]) end
rate_record(6, 0, now_ms)
local rank = store_job(0, 8)
redis.call('LPUSH', KEYS[10], ARGV[8])
return {0, rank}
"""
_SCRIPT = LuaScript.of(STORE_JOB_LUA + ratelimit.LUA + _SUBMIT)

# Takes back what _SUBMIT made: the same KEYS and ARGV, and KEYS[11], the job's
# cancel flag. Returns 1 when the job was removed, 0 when a worker had claimed it
# (then it is asked to cancel; its record stays, ending `canceled`).
_UNSUBMIT = """
local id = ARGV[9]
if redis.call('HGET', KEYS[1], 'status') ~= '"queued"' then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('SET', KEYS[11], '1', 'EX', ARGV[10])
    redis.call('HSET', KEYS[1], 'cancel_requested', 'true')
  end
  return 0
end
redis.call('LREM', KEYS[10], 1, ARGV[8])
sched_remove(job_of(id))
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
for i = 4, 8 do redis.call('ZREM', KEYS[i], id) end
if ARGV[6] ~= '' and redis.call('GET', KEYS[9]) == ARGV[6] then redis.call('DEL', KEYS[9]) end
return 1
"""
_UNDO = LuaScript.of(lua.source() + _UNSUBMIT)


def submit_call(
    record: JobRecord,
    init_image: bytes | None,
    mask: bytes | None,
    settings: Settings,
    idempotency: tuple[str, str] | None,
    limits: ratelimit.Limits | None = None,
    policy: KeyPolicy = DEFAULT_POLICY,
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the script for a new job; `idempotency`: the key's name and entry;
    `limits` and `policy`: the owner's (default: the server-wide ones)."""
    store_keys, store_args = store_job_call(
        record, init_image, mask, settings.job_ttl_s, settings.fair_share_half_life_s, policy
    )
    limits = limits or ratelimit.Limits.of(settings, policy)
    rate_keys, rate_args = ratelimit.rate_call(limits, settings, record.owner, record.id)
    # The job's wake-up token (docs/scheduling.md): an idle worker consuming the
    # queue takes it and asks the scheduler which job to run.
    message = token_message(record.queue, record.id)
    key_name, key_entry = idempotency or ("", "")
    keys = [*store_keys, *rate_keys, key_name, message.list_name]
    args = [*rate_args, key_entry, IDEMPOTENCY_TTL_S, message.payload, *store_args]
    return keys, args


async def run(
    client: MultiplexedRedis,
    keys: list[str],
    args: list[Any],
    replica_ack: ReplicaAck | None = None,
    master_check: AsyncMasterCheck | None = None,
) -> tuple[int, Any]:
    """Run the script: (verdict, queue position, ms to wait or the key's entry).

    With `replica_ack`, an admitted job that too few replicas confirm, or (with
    `master_check`, under Sentinel) that a master being failed over took, is
    taken back and NotReplicated raised.
    """
    if replica_ack is None:
        verdict, value = await client.run_script(_SCRIPT, keys, args)
        return int(verdict), value
    (verdict, value), acknowledged, server = await client.run_script_then(
        _SCRIPT, keys, args, "WAIT", replica_ack.replicas, replica_ack.timeout_ms
    )
    if int(verdict) != ratelimit.ADMITTED:
        return int(verdict), value
    try:
        replica_ack.check(int(acknowledged), "the job")
        if master_check is not None and server is not None:
            replica_ack.refuse_if(await master_check(server), "the job")
    except NotReplicated as refusal:
        job_id = args[8]
        removed = await client.run_script(_UNDO, [*keys, CANCEL_KEY_PREFIX + job_id], args[:10])
        outcome = "it was not accepted" if removed else f"job {job_id} is being canceled"
        raise NotReplicated(f"{refusal}; {outcome}") from None
    return int(verdict), value
