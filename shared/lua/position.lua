-- position: a queued job's place as the scheduler sees it, for a job already read.
-- uses: sched
-- ARG job: the job id
-- ARG half_life: FAIR_SHARE_HALF_LIFE_S
-- Returns {position or false, ETA in seconds as a string or false}.
local job = job_of(ARG.job)
if not job or job.status ~= 'queued' then return {false, false} end
local ahead, units = position(job, now_s() / tonumber(ARG.half_life))
local t = eta(job, units)
return {ahead, t and tostring(t) or false}
