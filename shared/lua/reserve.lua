-- reserve: the next job for a worker, chosen and set aside for it in one step.
-- uses: sched
-- ARG worker: the worker's name
-- ARG half_life: FAIR_SHARE_HALF_LIFE_S
-- ARG hand_queue: the queue of the wake-up token the worker holds ('' for none)
-- ARG hand_token: a fresh token for hand_queue, to park or give back ('' for none)
-- ARG resident: the models on the worker's device, comma separated
-- ARG warm: the models warm in its host memory, comma separated
-- ARG swap_after_ms: how much longer a job that needs a swap may wait than one
--         that does not before it goes first (docs/scheduling.md, "Models")
-- ARG claim_ttl_ms: a job that needs a swap marks its model as held by this
--         worker for this long (its heartbeats take over once it is loaded)
-- ARG adapters: the LoRA adapters loaded on its device (ids), comma separated
-- ARG queues...: the queues the worker consumes
-- Returns {job id, queue, record as JSON}, or false when nothing here is for this
-- worker now.
local worker, half_life = ARG.worker, tonumber(ARG.half_life)
local hand_queue, hand_token = ARG.hand_queue, ARG.hand_token
local resident, warm = set_of(ARG.resident), set_of(ARG.warm)
local swap_after_ms, claim_ttl_ms = tonumber(ARG.swap_after_ms), tonumber(ARG.claim_ttl_ms)
local adapters = set_of(ARG.adapters)
local queues = ARG.queues

local best, job
for _ = 1, 100 do
  best = best_for_worker(queues, resident, warm, worker, swap_after_ms)
  if not best then break end
  best = with_adapters_held(best, adapters, swap_after_ms)
  job = job_of(best.id)
  if job and job.status == 'queued' then break end
  -- Its record expired (or moved on without its line knowing): the line lets it go.
  sched_remove({id = best.id, queue = best.queue, band = best.band, owner = best.owner})
  redis.call('ZREM', k_waiting(best.queue), best.id)
  best = nil
end
if not best then
  -- Its queue's jobs wait for their keys' max_running: the token waits with them.
  if hand_token ~= '' and has_waiting(hand_queue) then
    redis.call('LPUSH', k_parked(hand_queue), hand_token)
  end
  return false
end

local start = usage_score(job.owner)
sched_remove(job)
charge(job, half_life, 1)
redis.call('HSET', K_RESERVED, job.id, worker .. '\t' .. start)
redis.call('SADD', k_reserved_in(job.queue, job.band), job.id)
redis.call('SADD', k_busy(job.owner), job.id)
-- A swap: from now on the model is this worker's, so no other worker swaps to it
-- for the same jobs while it loads.
local model = model_of_queue(job.queue)
if model ~= '' and not resident[model] then
  redis.call('ZADD', P .. 'sched:resident:' .. model, now_ms() + claim_ttl_ms, worker)
end
-- One token per job waiting for a worker: the one in hand pays for a job of its
-- own queue; for a job of another queue, that queue's token goes and the one in
-- hand goes back to its own.
if job.queue ~= hand_queue and take_token(job.queue) == 1 and hand_token ~= '' then
  redis.call('LPUSH', k_tokens(hand_queue), hand_token)
end
return {job.id, job.queue, record_json(job.id)}
