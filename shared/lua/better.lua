-- better: a job that should run before the one a worker reserved, if any: one of
-- a higher band, or of a key with less usage per weight than the reserved job's
-- key had before it was given it.
-- ARGV[1] job: the reserved job's id
-- ARGV[2..] queues: the queues the worker consumes
-- Returns the better job's id, or false.
local held = redis.call('HGET', K_RESERVED, ARGV[1])
if not held then return false end
local start = tonumber(held:match('\t(.*)$'))
local mine = job_of(ARGV[1])
if not mine then return false end
local queues = {}
for i = 2, #ARGV do queues[#queues + 1] = ARGV[i] end
local best = best_candidate(queues)
if not best then return false end
if BAND_RANK[best.band] < BAND_RANK[mine.band]
    or (best.band == mine.band and best.score < start) then
  return best.id
end
return false
