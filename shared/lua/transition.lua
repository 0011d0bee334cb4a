-- transition: move a job to another status, if its status machine allows it, and
-- keep every index it lives in (waiting set, the scheduler's lines, reservations,
-- its key's busy set, the running index, wake-up tokens) in the same step.
-- uses: sched
-- ARG job: the job id
-- ARG target: the new status
-- ARG allowed: the statuses that may move to target, comma separated
-- ARG half_life: FAIR_SHARE_HALF_LIFE_S
-- ARG worker: the worker a running job runs on ('' otherwise)
-- ARG token: a fresh wake-up token for the job's queue when target is queued ('' otherwise)
-- ARG fields...: field, JSON value, ...: the record's fields to set with it
-- Returns {'ok', record as JSON}, {'refused', current status} or {'missing'}.
local id, target, half_life = ARG.job, ARG.target, tonumber(ARG.half_life)
local worker, token = ARG.worker, ARG.token
local job = job_of(id)
if not job then return {'missing'} end
local allowed = false
for status in string.gmatch(ARG.allowed, '[^,]+') do
  if status == job.status then allowed = true end
end
if not allowed then return {'refused', job.status} end
if #ARG.fields > 0 then redis.call('HSET', k_job(id), unpack(ARG.fields)) end
if job.status ~= target then
  -- Numbered among its events, kept in its history: what an event stream that
  -- reconnects missed (api/events.py).
  local seq = redis.call('HINCRBY', k_job(id), 'events', 1)
  local history = cjson.decode(redis.call('HGET', k_job(id), 'history') or '[]')
  history[#history + 1] = {seq, target}
  redis.call('HSET', k_job(id), 'history', cjson.encode(history))
end

local from = job.status
if from == 'queued' and target ~= 'queued' then
  local reserved = unreserve(job)
  local waiting = sched_remove(job)
  redis.call('ZREM', k_waiting(job.queue), id)
  if waiting == 1 then
    -- Not reserved first: it takes its token now (and, to run, its charge).
    take_token(job.queue)
    if target == 'running' then charge(job, half_life, 1) end
  end
  if target == 'running' then
    redis.call('SADD', k_busy(job.owner), id)
  elseif reserved == 1 then
    redis.call('SREM', k_busy(job.owner), id)
    unpark_for(job.owner)
  end
elseif from == 'running' then
  redis.call('HDEL', K_RUNNING, id)
  redis.call('SREM', k_busy(job.owner), id)
  if target == 'queued' then
    enqueue(job, half_life)
    if token ~= '' then redis.call('LPUSH', k_tokens(job.queue), token) end
  end
  unpark_for(job.owner)
end
if target == 'running' then redis.call('HSET', K_RUNNING, id, worker) end
return {'ok', record_json(id)}
