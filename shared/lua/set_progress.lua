-- set_progress: a running job's progress, counted among its events (the event
-- stream numbers them), written only while the record exists.
-- KEY record: the job's hash
-- ARG progress: the progress as JSON (0..1)
-- Returns the event's number, or -1 when the record is gone.
if redis.call('EXISTS', KEY.record) == 1 then
  redis.call('HSET', KEY.record, 'progress', ARG.progress)
  return redis.call('HINCRBY', KEY.record, 'events', 1)
end
return -1
