-- list_jobs: jobs newest first from an index, at most `limit`, created before a
-- cursor, of one status and owner where asked (JobStore.list, GET /jobs). One
-- script, so the API's async connection and the workers' sync one list alike.
-- uses: sched
-- KEY index: every job's index, or one key's, by creation time (ms)
-- ARG limit: how many at most
-- ARG before: '(' .. the cursor, or '+inf' for the newest
-- ARG status: the status wanted ('' for any)
-- ARG owner: the owner wanted ('' for any)
-- ARG scan_max: how many index entries one call looks at, at most: a rare filter
--     then answers fewer jobs and a cursor to go on from, not a long blocking call
-- Returns {cursor or false, record as JSON, ...}: the cursor is the score of the
-- last entry looked at when more may follow, false at the end of the index.
local limit, scan_max = tonumber(ARG.limit), tonumber(ARG.scan_max)
local upper = ARG.before
local found = {false}
local looked = 0
while looked < scan_max do
  local page = redis.call('ZREVRANGEBYSCORE', KEY.index, upper, '-inf', 'WITHSCORES',
                          'LIMIT', 0, math.max(limit, 50))
  if #page == 0 then return found end
  for i = 1, #page, 2 do
    local id, score = page[i], page[i + 1]
    upper = '(' .. score
    looked = looked + 1
    local job = job_of(id)
    if job and (ARG.status == '' or job.status == ARG.status)
        and (ARG.owner == '' or job.owner == ARG.owner) then
      found[#found + 1] = record_json(id)
      if #found - 1 == limit then
        found[1] = score
        return found
      end
    end
    if looked >= scan_max then
      found[1] = score
      return found
    end
  end
end
return found
