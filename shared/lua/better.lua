-- better: a job that should run before the one a worker reserved, if any: one of
-- a higher band, or (needing no swap) of a key with less usage per weight than the
-- reserved job's key had before it was given it.
-- uses: sched
-- ARG job: the reserved job's id
-- ARG worker: the worker's name
-- ARG resident: the models on its device, comma separated
-- ARG warm: the models warm in its host memory, comma separated
-- ARG swap_after_ms: as for reserve
-- ARG queues...: the queues the worker consumes
-- Returns the better job's id, or false.
local held = redis.call('HGET', K_RESERVED, ARG.job)
if not held then return false end
local start = tonumber(held:match('\t(.*)$'))
local mine = job_of(ARG.job)
if not mine then return false end
local resident = set_of(ARG.resident)
local best = best_for_worker(ARG.queues, resident, set_of(ARG.warm), ARG.worker,
                             tonumber(ARG.swap_after_ms))
if not best then return false end
if BAND_RANK[best.band] < BAND_RANK[mine.band] then return best.id end
local m = model_of_queue(best.queue)
if best.band == mine.band and best.score < start and (m == '' or resident[m]) then
  return best.id
end
return false
