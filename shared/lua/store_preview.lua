-- store_preview: a job's latest preview, kept only while the job's record exists
-- (a preview must not outlive an expired job), numbered by the record's event
-- counter (shared/previews.py).
-- KEY record: the job's hash
-- KEY preview: the job's preview hash
-- ARG ttl: the preview's TTL (s)
-- ARG step: the step it shows
-- ARG steps: the job's steps
-- ARG images...: index, WebP, ... for each image
-- Returns its sequence number, or 0 when the record is gone.
if redis.call('EXISTS', KEY.record) == 0 then return 0 end
local seq = redis.call('HINCRBY', KEY.record, 'events', 1)
redis.call('DEL', KEY.preview)
redis.call('HSET', KEY.preview, 'seq', seq, 'step', ARG.step, 'steps', ARG.steps,
           'count', #ARG.images / 2, unpack(ARG.images))
redis.call('EXPIRE', KEY.preview, ARG.ttl)
return seq
