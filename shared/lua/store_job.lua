-- store_job(k, a): write a new job (record, init image, mask, index entries) and
-- queue it with the scheduler; returns its queue position. A function of offsets
-- into KEYS and ARGV, so that the API's submission script (which also admits and
-- enqueues the job) stores a job exactly as JobStore.create does.
-- KEYS[k+1..k+6]: record, init image, mask, jobs index, owner's index, waiting set.
-- ARGV[a+1..]: job id, TTL (s), created (ms), half_life, the key's weight, the key's
-- max_running (0: none), init image or '', mask or '' (an empty image is refused
-- before it gets here), then the record's field names and JSON values.
local function store_job(k, a)
  local id, ttl, created = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local half_life = tonumber(ARGV[a + 4])
  redis.call('HSET', KEYS[k + 1], unpack(ARGV, a + 9))
  redis.call('EXPIRE', KEYS[k + 1], ttl)
  if ARGV[a + 7] ~= '' then redis.call('SET', KEYS[k + 2], ARGV[a + 7], 'EX', ttl) end
  if ARGV[a + 8] ~= '' then redis.call('SET', KEYS[k + 3], ARGV[a + 8], 'EX', ttl) end
  for i = k + 4, k + 5 do
    redis.call('ZADD', KEYS[i], created, id)
    -- Entries of expired records leave the index as new jobs arrive.
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', created - ttl * 1000)
  end
  redis.call('EXPIRE', KEYS[k + 5], ttl)
  local job = job_of(id)
  redis.call('HSET', K_WEIGHT, job.owner, ARGV[a + 5])
  redis.call('HSET', K_CAP, job.owner, ARGV[a + 6])
  enqueue(job, half_life)
  local ahead = position(job, now_s() / half_life)
  return ahead
end
