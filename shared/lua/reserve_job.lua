-- reserve_job: set aside one given queued job for a worker (a companion of a
-- batch, chosen from peek), if it is still waiting and its key is under its cap.
-- ARGV[1] job, ARGV[2] worker, ARGV[3] half_life
-- Returns 1 when reserved, 0 when it is gone (taken, canceled) or not allowed now.
local job = job_of(ARGV[1])
if not job or job.status ~= 'queued' or not under_cap(job.owner) then return 0 end
local start = usage_score(job.owner)
if sched_remove(job) == 0 then return 0 end
charge(job, tonumber(ARGV[3]), 1)
redis.call('HSET', K_RESERVED, job.id, ARGV[2] .. '\t' .. start)
redis.call('SADD', k_reserved_in(job.queue, job.band), job.id)
redis.call('SADD', k_busy(job.owner), job.id)
take_token(job.queue)
return 1
