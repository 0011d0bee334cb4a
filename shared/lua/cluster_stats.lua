-- cluster_stats: the whole cluster's state in one call, for the API's /metrics
-- (shared/cluster_stats.py): the live workers, the running-job index, the webhook
-- backlog and the waiting jobs of every queue, counted per priority band.
-- KEY running: the running-job index
-- KEY webhook_retry: webhook deliveries waiting for their retry time
-- KEY lists...: the webhook queue's broker lists, then every queue's waiting set
-- ARG worker_pattern: the match pattern of the workers' keys
-- ARG webhook_lists: how many of `lists` are the webhook queue's
-- ARG bands...: each priority band's [min, max) waiting-set scores, in pairs
-- Returns {workers' records, the running jobs' workers, backlog, counts}.
local workers = {}
local cursor = "0"
repeat
  local page = redis.call("SCAN", cursor, "MATCH", ARG.worker_pattern, "COUNT", 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local value = redis.call("GET", key)
    if value then table.insert(workers, value) end
  end
until cursor == "0"
local running = redis.call("HVALS", KEY.running)
local backlog = redis.call("ZCARD", KEY.webhook_retry)
local webhook_lists = tonumber(ARG.webhook_lists)
for i = 1, webhook_lists do
  backlog = backlog + redis.call("LLEN", KEY.lists[i])
end
local counts = {}
for k = webhook_lists + 1, #KEY.lists do
  for b = 1, #ARG.bands, 2 do
    table.insert(counts, redis.call("ZCOUNT", KEY.lists[k], ARG.bands[b], "(" .. ARG.bands[b + 1]))
  end
end
return {workers, running, backlog, counts}
