-- submit: a new job in one step (api/enqueue.py): its Idempotency-Key claimed, its
-- key's rate limits checked and counted (rate_limits.lua), the job stored and queued
-- (store_job.lua) and its wake-up token pushed onto the broker list.
-- uses: sched store_job rate_limits
-- KEY idempotency: the Idempotency-Key's entry ('' without one)
-- KEY broker: the queue's broker list
-- ARG claim: what the Idempotency-Key's entry holds ('' without one)
-- ARG claim_ttl: its TTL (s)
-- ARG message: the wake-up token (a Celery message)
-- Returns {0, queue position} when admitted, a refusal {verdict, ms until a slot
-- frees}, or {3, the key's entry} for a replay: the earlier request's job is the answer.
if ARG.claim ~= '' then
  local earlier = redis.call('GET', KEY.idempotency)
  if earlier then return {3, earlier} end
end
local refused, now_ms = rate_check()
if refused then return refused end
-- Admitted: only writes from here on, none of which can be refused.
if ARG.claim ~= '' then redis.call('SET', KEY.idempotency, ARG.claim, 'EX', ARG.claim_ttl) end
rate_record(now_ms)
local rank = store_job()
redis.call('LPUSH', KEY.broker, ARG.message)
return {0, rank}
