-- update_job: set fields of an existing record without a status change. HSET on a
-- record that just expired would resurrect a fragment of it: the write happens
-- only while the record exists.
-- KEY record: the job's hash
-- ARG fields...: field, JSON value, ...
-- Returns the number of new fields, or -1 when the record is gone.
if redis.call('EXISTS', KEY.record) == 1 then
  return redis.call('HSET', KEY.record, unpack(ARG.fields))
end
return -1
