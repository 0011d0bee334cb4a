-- read: a job as it stands, with what its public view needs, in one round trip:
-- a queued job's position and ETA (the scheduler's), a webhook's delivery log.
-- uses: sched
-- ARG job: the job id
-- ARG half_life: FAIR_SHARE_HALF_LIFE_S
-- Returns false for no record, else {record as JSON, position or false, ETA in
-- seconds as a string or false, the delivery log or false}.
local id, half_life = ARG.job, tonumber(ARG.half_life)
if redis.call('EXISTS', k_job(id)) == 0 then return false end
local fields = redis.call('HMGET', k_job(id), 'status', 'webhook')
local rank, seconds, log = false, false, false
if fields[1] == '"queued"' then
  local job = job_of(id)
  local ahead, units = position(job, now_s() / half_life)
  rank = ahead
  local t = eta(job, units)
  if t then seconds = tostring(t) end
end
if fields[2] and fields[2] ~= 'null' then
  log = redis.call('LRANGE', P .. 'webhook-log:' .. id, 0, -1)
end
return {record_json(id), rank, seconds, log}
