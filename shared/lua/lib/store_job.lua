-- store_job(): write a new job (record, init image, mask, index entries) and queue
-- it with the scheduler; returns its queue position. A library of the scripts that
-- make jobs, create.lua (JobStore.create) and submit.lua (the API's submission,
-- which also admits and enqueues the job), so that both store a job alike.
-- KEY record: the job's hash
-- KEY input: its init image
-- KEY mask: its mask
-- KEY jobs_index: every job by creation time
-- KEY owner_index: its key's jobs by creation time
-- KEY waiting: its queue's waiting set
-- ARG job: the job id
-- ARG ttl: JOB_TTL_S
-- ARG created: when it was made (ms)
-- ARG half_life: FAIR_SHARE_HALF_LIFE_S
-- ARG weight: its key's weight
-- ARG max_running: its key's max_running (0: none)
-- ARG init_image: the init image, or ''
-- ARG mask_image: the mask, or '' (an empty image is refused before it gets here)
-- ARG fields...: the record's field names and JSON values
local function store_job()
  local id, ttl, created = ARG.job, tonumber(ARG.ttl), tonumber(ARG.created)
  redis.call('HSET', KEY.record, unpack(ARG.fields))
  redis.call('EXPIRE', KEY.record, ttl)
  if ARG.init_image ~= '' then redis.call('SET', KEY.input, ARG.init_image, 'EX', ttl) end
  if ARG.mask_image ~= '' then redis.call('SET', KEY.mask, ARG.mask_image, 'EX', ttl) end
  for _, index in ipairs({KEY.jobs_index, KEY.owner_index}) do
    redis.call('ZADD', index, created, id)
    -- Entries of expired records leave the index as new jobs arrive.
    redis.call('ZREMRANGEBYSCORE', index, '-inf', created - ttl * 1000)
  end
  redis.call('EXPIRE', KEY.owner_index, ttl)
  local job = job_of(id)
  redis.call('HSET', K_WEIGHT, job.owner, ARG.weight)
  redis.call('HSET', K_CAP, job.owner, ARG.max_running)
  enqueue(job, tonumber(ARG.half_life))
  local ahead = position(job, now_s() / tonumber(ARG.half_life))
  return ahead
end
