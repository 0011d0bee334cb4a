-- acquire_lease: take a webhook delivery lease on one of `limit` slots of an API
-- key, dropping expired leases first (worker/webhook_leases.py).
-- KEY leases: the key's sorted set, lease id -> expiry (ms)
-- ARG lease: the new lease's id
-- ARG limit: WEBHOOK_MAX_PER_KEY
-- ARG lifetime_ms: how long the lease lasts unless given back
-- Returns 1 when taken, 0 when every slot is held.
local limit, lifetime_ms = tonumber(ARG.limit), tonumber(ARG.lifetime_ms)
local clock = redis.call('TIME')
local now_ms = clock[1] * 1000 + math.floor(clock[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEY.leases, '-inf', now_ms)
if redis.call('ZCARD', KEY.leases) >= limit then
  return 0
end
redis.call('ZADD', KEY.leases, now_ms + lifetime_ms, ARG.lease)
-- The newest lease expires last: the set goes when its last lease does.
redis.call('PEXPIRE', KEY.leases, lifetime_ms)
return 1
