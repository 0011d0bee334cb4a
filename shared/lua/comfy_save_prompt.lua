-- comfy_save_prompt: a ComfyUI prompt's record, listed in its key's prompts and its
-- client's, in one step (api/compat/comfy_store.py). One script, not MULTI/EXEC:
-- the API's connection is shared by every request, whose commands interleave on it.
-- KEY record: the prompt's record (JSON)
-- KEY prompts: the key's prompt ids by number
-- KEY client: the prompts of the client that queued it ('' for none)
-- ARG prompt: the prompt id
-- ARG record: the record, as JSON
-- ARG number: its number
-- ARG ttl: JOB_TTL_S
-- ARG listed: how many of the key's newest prompt ids are kept
redis.call('SET', KEY.record, ARG.record, 'EX', ARG.ttl)
redis.call('ZADD', KEY.prompts, ARG.number, ARG.prompt)
-- Ids of prompts gone with their TTL are dropped when read (ComfyStore.load_many).
redis.call('ZREMRANGEBYRANK', KEY.prompts, 0, -tonumber(ARG.listed) - 1)
redis.call('EXPIRE', KEY.prompts, ARG.ttl)
if KEY.client ~= '' then
  redis.call('SADD', KEY.client, ARG.prompt)
  redis.call('EXPIRE', KEY.client, ARG.ttl)
end
return 1
