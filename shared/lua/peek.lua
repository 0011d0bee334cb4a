-- peek: up to `limit` queued jobs a worker consuming `queues` may take, about in
-- the order it would be given them (band by band; the least-served keys first,
-- their jobs taken in turns). Reserves nothing: dynamic batching picks
-- companions of the same shape from it and reserves them one by one.
-- uses: sched
-- ARG limit: how many at most
-- ARG queues...: the queues the worker consumes
local limit = tonumber(ARG.limit)
local queues = ARG.queues
local found = {}
for _, band in ipairs(BANDS) do
  local lines = {}
  for _, q in ipairs(queues) do
    local owners = redis.call('ZRANGE', k_owners(q, band), 0, 31, 'WITHSCORES')
    for i = 1, #owners, 2 do
      if under_cap(owners[i]) then
        lines[#lines + 1] = {score = tonumber(owners[i + 1]),
                             ids = redis.call('ZRANGE', k_jobs(q, band, owners[i]), 0, limit - 1)}
      end
    end
  end
  table.sort(lines, function(a, b) return a.score < b.score end)
  local turn = 1
  while #found < limit do
    local took = false
    for _, line in ipairs(lines) do
      if line.ids[turn] then
        found[#found + 1] = line.ids[turn]
        took = true
        if #found >= limit then break end
      end
    end
    if not took then break end
    turn = turn + 1
  end
  if #found >= limit then break end
end
return found
