-- usage: what a key has in flight, for GET /me: jobs accepted in the last minute,
-- and its jobs now queued and running (from the active set, read with their statuses).
-- uses: sched
-- KEY submits: the key's log of accepted jobs
-- KEY active: its jobs queued or running
-- ARG window_ms: the per-minute window
-- Returns {submits, queued, running}.
local now = now_ms()
local submits = redis.call('ZCOUNT', KEY.submits, now - tonumber(ARG.window_ms), '+inf')
local queued, running = 0, 0
for _, id in ipairs(redis.call('ZRANGE', KEY.active, 0, -1)) do
  local status = redis.call('HGET', k_job(id), 'status')
  if status == '"queued"' then queued = queued + 1
  elseif status == '"running"' then running = running + 1 end
end
return {submits, queued, running}
