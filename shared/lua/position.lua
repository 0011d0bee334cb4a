-- position: a queued job's place as the scheduler sees it, for a job already read.
-- ARGV[1] job: the job id
-- ARGV[2] half_life: FAIR_SHARE_HALF_LIFE_S
-- Returns {position or false, ETA in seconds as a string or false}.
local job = job_of(ARGV[1])
if not job or job.status ~= 'queued' then return {false, false} end
local ahead, units = position(job, now_s() / tonumber(ARGV[2]))
local t = eta(job, units)
return {ahead, t and tostring(t) or false}
