-- comfy_put_upload: keep an image a key uploaded through the ComfyUI dialect, unless
-- the key holds `max_uploads` others already (api/compat/comfy_store.py). Checked and
-- written in one step: the API's connection is shared by every request.
-- KEY upload: the image's bytes
-- KEY uploads: the key's upload names by expiry
-- ARG name: the upload's name
-- ARG data: the image
-- ARG now: the time (s)
-- ARG expires: when it expires (s)
-- ARG ttl: JOB_TTL_S
-- ARG max_uploads: MAX_UPLOADS_PER_KEY
-- Returns 1 when kept, 0 when the key holds too many (nothing written).
redis.call('ZREMRANGEBYSCORE', KEY.uploads, 0, ARG.now)
local replaces = redis.call('ZSCORE', KEY.uploads, ARG.name)
if not replaces and redis.call('ZCARD', KEY.uploads) >= tonumber(ARG.max_uploads) then
  return 0
end
redis.call('SET', KEY.upload, ARG.data, 'EX', ARG.ttl)
redis.call('ZADD', KEY.uploads, ARG.expires, ARG.name)
redis.call('EXPIRE', KEY.uploads, ARG.ttl)
return 1
