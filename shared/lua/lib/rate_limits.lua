-- rate_check() and rate_record(): a key's two rate limits (api/ratelimit.py). A
-- library of submit.lua, which checks them, stores and enqueues the job in one
-- atomic step, and of admit.lua, which runs them alone.
-- KEY submits: the key's log of accepted jobs (a sorted set by time)
-- KEY active: its jobs queued or running (a sorted set by admission time)
-- ARG job: the job id
-- ARG per_minute: RATE_LIMIT_SUBMITS_PER_MINUTE (0: off)
-- ARG max_active: the key's RATE_LIMIT_MAX_QUEUED (0: off)
-- ARG window_ms: the per-minute window
-- ARG active_ttl: the TTL of the active set (s)

-- nil and the time (ms) when admitted, else {verdict, ms until a slot frees}
-- (verdicts: 1 too fast, 2 too many active); writes nothing but the trimming of
-- expired entries.
local function rate_check()
  local per_minute, max_active = tonumber(ARG.per_minute), tonumber(ARG.max_active)
  if per_minute == 0 and max_active == 0 then return nil, 0 end
  local now = now_ms()
  local window = tonumber(ARG.window_ms)
  if per_minute > 0 then
    redis.call('ZREMRANGEBYSCORE', KEY.submits, '-inf', now - window)
    if redis.call('ZCARD', KEY.submits) >= per_minute then
      local oldest = redis.call('ZRANGE', KEY.submits, 0, 0, 'WITHSCORES')
      return {1, tonumber(oldest[2]) + window - now}, now
    end
  end
  if max_active > 0 and redis.call('ZCARD', KEY.active) >= max_active then
    return {2, 0}, now
  end
  return nil, now
end

-- Counts the admitted job (at `now`, rate_check's time) against both limits.
local function rate_record(now)
  if tonumber(ARG.per_minute) > 0 then
    redis.call('ZADD', KEY.submits, now, ARG.job)
    redis.call('PEXPIRE', KEY.submits, ARG.window_ms)
  end
  if tonumber(ARG.max_active) > 0 then
    redis.call('ZADD', KEY.active, now, ARG.job)
    redis.call('EXPIRE', KEY.active, ARG.active_ttl)
  end
end
