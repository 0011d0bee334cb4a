-- reserve_job: set aside one given queued job for a worker (a companion of a
-- batch, chosen from peek), if it is still waiting and its key is under its cap.
-- uses: sched
-- ARG job: the job id
-- ARG worker: the worker's name
-- ARG half_life: FAIR_SHARE_HALF_LIFE_S
-- Returns 1 when reserved, 0 when it is gone (taken, canceled) or not allowed now.
local job = job_of(ARG.job)
if not job or job.status ~= 'queued' or not under_cap(job.owner) then return 0 end
local start = usage_score(job.owner)
if sched_remove(job) == 0 then return 0 end
charge(job, tonumber(ARG.half_life), 1)
redis.call('HSET', K_RESERVED, job.id, ARG.worker .. '\t' .. start)
redis.call('SADD', k_reserved_in(job.queue, job.band), job.id)
redis.call('SADD', k_busy(job.owner), job.id)
take_token(job.queue)
return 1
