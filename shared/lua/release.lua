-- release: a worker lets a job it reserved go back to its queue, where it was.
-- uses: sched
-- ARG job: the job id
-- ARG worker: the worker that reserved it (another's reservation is left alone)
-- ARG half_life: FAIR_SHARE_HALF_LIFE_S
-- ARG token: a fresh wake-up token for the job's queue
-- Returns 1 when it went back, 0 when it was not this worker's reservation.
local id, worker, half_life, token = ARG.job, ARG.worker, tonumber(ARG.half_life), ARG.token
local held = redis.call('HGET', K_RESERVED, id)
if not held or held:match('^(.*)\t') ~= worker then return 0 end
local job = job_of(id)
unreserve(job)
if not job or job.status ~= 'queued' then return 0 end
redis.call('SREM', k_busy(job.owner), id)
charge(job, half_life, -1)
sched_add(job, half_life)
redis.call('INCR', K_EPOCH)
redis.call('LPUSH', k_tokens(job.queue), token)
return 1
