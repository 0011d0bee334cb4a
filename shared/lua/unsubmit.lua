-- unsubmit: take back what submit.lua made when too few replicas confirmed it:
-- record, images, index entries, rate-limit entries, broker message and
-- Idempotency-Key. A worker that took the job meanwhile is asked to cancel it.
-- uses: sched
-- KEY record: the job's hash
-- KEY input: its init image
-- KEY mask: its mask
-- KEY jobs_index: every job by creation time
-- KEY owner_index: its key's jobs by creation time
-- KEY waiting: its queue's waiting set
-- KEY submits: its key's log of accepted jobs
-- KEY active: its key's jobs queued or running
-- KEY idempotency: the Idempotency-Key's entry ('' without one)
-- KEY broker: the queue's broker list
-- KEY cancel: the job's cancel flag
-- ARG job: the job id
-- ARG ttl: JOB_TTL_S (the cancel flag's)
-- ARG claim: what the Idempotency-Key's entry holds ('' without one)
-- ARG message: the wake-up token submit pushed
-- Returns 1 when the job was removed, 0 when a worker had claimed it (its record
-- stays, ending `canceled`).
if redis.call('HGET', KEY.record, 'status') ~= '"queued"' then
  if redis.call('EXISTS', KEY.record) == 1 then
    redis.call('SET', KEY.cancel, '1', 'EX', ARG.ttl)
    redis.call('HSET', KEY.record, 'cancel_requested', 'true')
  end
  return 0
end
redis.call('LREM', KEY.broker, 1, ARG.message)
sched_remove(job_of(ARG.job))
redis.call('DEL', KEY.record, KEY.input, KEY.mask)
for _, index in ipairs({KEY.jobs_index, KEY.owner_index, KEY.waiting, KEY.submits, KEY.active}) do
  redis.call('ZREM', index, ARG.job)
end
if ARG.claim ~= '' and redis.call('GET', KEY.idempotency) == ARG.claim then
  redis.call('DEL', KEY.idempotency)
end
return 1
