-- better: a job that should run before the one a worker reserved, if any: one of
-- a higher band, or (needing no swap) of a key with less usage per weight than the
-- reserved job's key had before it was given it.
-- ARGV[1] job: the reserved job's id
-- ARGV[2] worker, ARGV[3] resident, ARGV[4] warm, ARGV[5] swap_after_ms,
-- ARGV[6] claim_ttl_ms, ARGV[7] adapters (unused here): as for reserve
-- ARGV[8..] queues: the queues the worker consumes
-- Returns the better job's id, or false.
local held = redis.call('HGET', K_RESERVED, ARGV[1])
if not held then return false end
local start = tonumber(held:match('\t(.*)$'))
local mine = job_of(ARGV[1])
if not mine then return false end
local resident = set_of(ARGV[3])
local queues = {}
for i = 8, #ARGV do queues[#queues + 1] = ARGV[i] end
local best = best_for_worker(queues, resident, set_of(ARGV[4]), ARGV[2], tonumber(ARGV[5]))
if not best then return false end
if BAND_RANK[best.band] < BAND_RANK[mine.band] then return best.id end
local m = model_of_queue(best.queue)
if best.band == mine.band and best.score < start and (m == '' or resident[m]) then
  return best.id
end
return false
