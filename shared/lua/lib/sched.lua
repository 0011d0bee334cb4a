-- The scheduler's structures (docs/scheduling.md), as functions every script that
-- changes a job's place in them shares: shared/lua.py puts this file in front of
-- each of those scripts, so a waiting job is written one way wherever it moves.
--
-- Keys are made here from the prefix: darkroom runs on one Redis (or Sentinel's
-- master), never Redis Cluster, so a script may touch keys it did not declare.

local P = 'darkroom:'
local BANDS = {'high', 'normal', 'low'}
-- Waiting-set scores: a band's jobs lie in [rank * BAND_WIDTH, (rank + 1) * BAND_WIDTH).
local BAND_RANK = {high = 0, normal = 3, low = 6}
local BAND_WIDTH = 1e13
local LN2 = math.log(2)
local NEVER = -math.huge

local K_USAGE = P .. 'sched:usage'
-- Each key's weight and max_running, as the API last saw them (API_KEYS_FILE).
local K_WEIGHT = P .. 'sched:weight'
local K_CAP = P .. 'sched:cap'
local K_RESERVED = P .. 'sched:reserved'
local K_EPOCH = P .. 'sched:epoch'
local K_RUNNING = P .. 'running'
-- The cluster's total usage, beside each key's in K_USAGE (no key id has a '*').
local TOTAL = '*'

local function k_job(id) return P .. 'job:' .. id end
local function k_jobs(q, band, owner) return P .. 'sched:jobs:' .. q .. ':' .. band .. ':' .. owner end
local function k_owners(q, band) return P .. 'sched:owners:' .. q .. ':' .. band end
local function k_member(owner) return P .. 'sched:member:' .. owner end
-- Per queue and band: each key's number of jobs in its line (a poll reads them at once).
local function k_lens(q, band) return P .. 'sched:lens:' .. q .. ':' .. band end
local function k_busy(owner) return P .. 'sched:busy:' .. owner end
local function k_reserved_in(q, band) return P .. 'sched:reserved:' .. q .. ':' .. band end
local function k_parked(q) return P .. 'sched:parked:' .. q end
local function k_waiting(q) return P .. 'waiting:' .. q end
-- Wake-up tokens go to the queue's own broker list (kombu's priority step 0).
local function k_tokens(q) return q end

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

-- A JSON string field's text: darkroom's statuses, queue names, priorities and key
-- ids never hold a character JSON escapes, so the quotes are all there is to strip
-- (cheaper than cjson, on every script that touches a job).
local function unquote(raw)
  return raw and string.sub(raw, 2, -2)
end

-- What the scheduler reads of a job's record (each field is stored as JSON).
local function job_of(id)
  local raw = redis.call('HMGET', k_job(id), 'status', 'queue', 'priority', 'owner', 'cost', 'arrival_ms')
  if not raw[1] then return nil end
  return {
    id = id,
    status = unquote(raw[1]),
    queue = unquote(raw[2]),
    band = unquote(raw[3]),
    owner = unquote(raw[4]) or 'anonymous',
    cost = tonumber(raw[5]) or 1,
    arrival = tonumber(raw[6]) or 0,
  }
end

local function weight_of(owner)
  return tonumber(redis.call('HGET', K_WEIGHT, owner)) or 1
end

-- A key may run another job unless it has max_running jobs reserved or running.
local function under_cap(owner)
  local cap = tonumber(redis.call('HGET', K_CAP, owner)) or 0
  return cap <= 0 or redis.call('SCARD', k_busy(owner)) < cap
end

-- Usage per weight is kept as log2(usage / weight) + t / half_life: it does not
-- change while a key is idle (the decay is in the t / half_life term), so keys
-- compare by their stored scores at any moment.
local function usage_score(owner)
  local v = redis.call('HGET', K_USAGE, owner)
  return v and tonumber(v) or NEVER
end

local function plus(score, amount, base)
  return math.log(2 ^ (score - base) + amount) / LN2 + base
end

local function minus(score, amount, base)
  local left = 2 ^ (score - base) - amount
  if left <= 0 then return NEVER end
  return math.log(left) / LN2 + base
end

local function set_usage(owner, score)
  redis.call('HSET', K_USAGE, owner, score)
  for _, place in ipairs(redis.call('SMEMBERS', k_member(owner))) do
    local q, band = place:match('^(.*)|(%a+)$')
    redis.call('ZADD', k_owners(q, band), 'XX', score, owner)
  end
end

-- Charge (or refund, sign -1) a job's cost to its key and to the cluster's total.
local function charge(job, half_life, sign)
  local base = now_s() / half_life
  local step = sign > 0 and plus or minus
  set_usage(job.owner, step(usage_score(job.owner), job.cost / weight_of(job.owner), base))
  redis.call('HSET', K_USAGE, TOTAL, step(usage_score(TOTAL), job.cost, base))
end

-- A key that enters a band comes in no lower than the key served least there,
-- less one of that key's jobs: idle time banks no credit, and a newcomer goes
-- before the next job of the keys already waiting (start-time fair queueing).
local function entry_score(q, band, owner, base)
  local own = usage_score(owner)
  local lowest = redis.call('ZRANGE', k_owners(q, band), 0, 0, 'WITHSCORES')
  if not lowest[1] then return own end
  local floor = tonumber(lowest[2])
  local head = redis.call('ZRANGE', k_jobs(q, band, lowest[1]), 0, 0)[1]
  local next_job = head and job_of(head)
  if next_job then
    floor = minus(floor, next_job.cost / weight_of(lowest[1]), base)
  end
  -- Just under it: ahead of that key's next job, not merely tied with it.
  floor = floor - 1e-6
  if own >= floor then return own end
  return floor
end

-- A job joins its key's line in its queue and band (a key's jobs run in arrival order).
local function sched_add(job, half_life)
  local q, band, owner = job.queue, job.band, job.owner
  local owners = k_owners(q, band)
  if not redis.call('ZSCORE', owners, owner) then
    local score = entry_score(q, band, owner, now_s() / half_life)
    if score > usage_score(owner) then set_usage(owner, score) end
    redis.call('ZADD', owners, score, owner)
    redis.call('SADD', k_member(owner), q .. '|' .. band)
  end
  if redis.call('ZADD', k_jobs(q, band, owner), job.arrival, job.id) == 1 then
    redis.call('HINCRBY', k_lens(q, band), owner, 1)
  end
end

-- A job leaves its key's line (taken by a worker, canceled); 1 if it was there.
local function sched_remove(job)
  local line = k_jobs(job.queue, job.band, job.owner)
  if redis.call('ZREM', line, job.id) == 0 then return 0 end
  local lens = k_lens(job.queue, job.band)
  if redis.call('HINCRBY', lens, job.owner, -1) <= 0 then
    redis.call('HDEL', lens, job.owner)
    redis.call('ZREM', k_owners(job.queue, job.band), job.owner)
    redis.call('SREM', k_member(job.owner), job.queue .. '|' .. job.band)
  end
  return 1
end

local function waiting_score(job)
  return BAND_RANK[job.band] * BAND_WIDTH + job.arrival
end

-- A job becomes queued (new, handed back by the reaper, let go by a worker).
local function enqueue(job, half_life)
  sched_add(job, half_life)
  redis.call('ZADD', k_waiting(job.queue), waiting_score(job), job.id)
  redis.call('INCR', K_EPOCH)
end

-- Take one wake-up token of `q` off its list (or from its parked ones); 1 if any was left.
local function take_token(q)
  if redis.call('RPOP', k_tokens(q)) then return 1 end
  if redis.call('RPOP', k_parked(q)) then return 1 end
  return 0
end

-- A key's slot freed (a job of its ended or went back): a token parked while the
-- key was at its max_running goes back to its queue's list.
local function unpark_for(owner)
  -- Only a key at its cap ever leaves its tokens parked.
  if (tonumber(redis.call('HGET', K_CAP, owner)) or 0) <= 0 then return end
  for _, place in ipairs(redis.call('SMEMBERS', k_member(owner))) do
    local q = place:match('^(.*)|%a+$')
    if redis.call('RPOPLPUSH', k_parked(q), k_tokens(q)) then return end
  end
end

-- Forget a reservation (the job started, was canceled, or went back).
local function unreserve(job)
  if redis.call('HDEL', K_RESERVED, job.id) == 1 then
    redis.call('SREM', k_reserved_in(job.queue, job.band), job.id)
    return 1
  end
  return 0
end

-- Whether `q` holds jobs not yet reserved (in any band).
local function has_waiting(q)
  for _, band in ipairs(BANDS) do
    if redis.call('ZCARD', k_owners(q, band)) > 0 then return true end
  end
  return false
end

-- The head job of the least-served eligible key of one queue and band, if its
-- usage is at most `bound` (nil: any).
local function first_eligible(q, band, bound)
  local owners = k_owners(q, band)
  local from = 0
  while true do
    local page = redis.call('ZRANGE', owners, from, from + 31, 'WITHSCORES')
    if #page == 0 then return nil end
    for i = 1, #page, 2 do
      local owner, score = page[i], tonumber(page[i + 1])
      if bound and score > bound then return nil end
      if under_cap(owner) then
        local head = redis.call('ZRANGE', k_jobs(q, band, owner), 0, 0, 'WITHSCORES')
        return {id = head[1], arrival = tonumber(head[2]), owner = owner, score = score,
                queue = q, band = band}
      end
    end
    from = from + 32
  end
end

-- The fairest candidate of one band among `queues`: the head job of the key with
-- the least usage per weight that is under its max_running; ties go to the
-- earlier job.
local function fairest(queues, band)
  local best
  for _, q in ipairs(queues) do
    local c = first_eligible(q, band, best and best.score)
    if c and (not best or c.score < best.score
              or (c.score == best.score and c.arrival < best.arrival)) then
      best = c
    end
  end
  return best
end

-- A comma-separated list as a set.
local function set_of(list)
  local set = {}
  for item in string.gmatch(list or '', '[^,]+') do set[item] = true end
  return set
end

-- The model a queue's jobs run on ('' for the shared queue: any model).
local function model_of_queue(q)
  return q:match('^darkroom%.model%.(.+)$') or ''
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Whether a live worker other than `worker` holds `model` on its device.
local function held_elsewhere(model, worker, now)
  for _, other in ipairs(redis.call('ZRANGEBYSCORE', P .. 'sched:resident:' .. model, now, '+inf')) do
    if other ~= worker then return true end
  end
  return false
end

-- A worker holding several models (docs/scheduling.md, "Models"), band by band:
-- 1. the fairest job, if it needs no swap (its model is on this worker's device,
--    or it named none);
-- 2. else the fairest job that needs no swap, unless the swap's job has waited
--    `swap_after_ms` longer than it and no other worker holds its model;
-- 3. else, with nothing here to run without a swap, a job whose model no other
--    worker holds (warm in this worker's host memory before one on disk), or one
--    whose model another worker holds but that has waited `swap_after_ms`: a
--    worker does not take a model from the worker that holds it, unless that
--    one does not keep up.
local function best_for_worker(queues, resident, warm, worker, swap_after_ms)
  local now = now_ms()
  -- Each queue's place, looked up once: another worker's holdings cost a read each.
  local here, warmq, coldq, elsewhere, taken_models = {}, {}, {}, {}, {}
  for _, q in ipairs(queues) do
    local m = model_of_queue(q)
    if m == '' or resident[m] then here[#here + 1] = q
    elseif held_elsewhere(m, worker, now) then
      elsewhere[#elsewhere + 1] = q
      taken_models[m] = true
    elseif warm[m] then warmq[#warmq + 1] = q
    else coldq[#coldq + 1] = q end
  end
  for _, band in ipairs(BANDS) do
    local all = fairest(queues, band)
    if all then
      local m = model_of_queue(all.queue)
      if m == '' or resident[m] then return all end
      local near = fairest(here, band)
      if near then
        if all.arrival + swap_after_ms < near.arrival and not taken_models[m] then
          return all
        end
        return near
      end
      local free = fairest(warmq, band) or fairest(coldq, band)
      if free then return free end
      local taken = fairest(elsewhere, band)
      if taken and taken.arrival + swap_after_ms < now then return taken end
    end
  end
  return nil
end

-- How many jobs will run before queued job `job`, and their estimated cost: its
-- band's reservations in its queue, the higher bands' jobs, the key's own earlier
-- jobs, and of each other key of its band the jobs that start (in usage per
-- weight) before it, taken to cost what this job costs. Past SAMPLED such keys
-- the rest are estimated from those: a poll reads a bounded number of keys.
local SAMPLED = 24

local function position(job, base)
  if redis.call('HEXISTS', K_RESERVED, job.id) == 1 then return 0, 0 end
  -- Its band's reserved jobs run first (a lower band's give way to it); the
  -- higher bands' jobs, reserved or not, are in the waiting set.
  local ahead = redis.call('SCARD', k_reserved_in(job.queue, job.band))
  local rank = BAND_RANK[job.band]
  if rank > 0 then
    ahead = ahead + redis.call('ZCOUNT', k_waiting(job.queue), '-inf', '(' .. rank * BAND_WIDTH)
  end
  local line = k_jobs(job.queue, job.band, job.owner)
  local mine = redis.call('ZRANK', line, job.id) or 0
  ahead = ahead + mine
  local owners = k_owners(job.queue, job.band)
  local score = tonumber(redis.call('ZSCORE', owners, job.owner)) or usage_score(job.owner)
  local start = 2 ^ (score - base) + mine * job.cost / weight_of(job.owner)
  if start > 0 then
    local upper = '(' .. (math.log(start) / LN2 + base)
    local others = redis.call('ZRANGEBYSCORE', owners, '-inf', upper, 'WITHSCORES', 'LIMIT', 0, SAMPLED)
    local names = {}
    for i = 1, #others, 2 do names[#names + 1] = others[i] end
    local counted, found = 0, 0
    if #names > 0 then
      local weights = redis.call('HMGET', K_WEIGHT, unpack(names))
      local lens = redis.call('HMGET', k_lens(job.queue, job.band), unpack(names))
      for i, owner in ipairs(names) do
        if owner ~= job.owner then
          local used = 2 ^ (tonumber(others[2 * i]) - base)
          local n = math.ceil((start - used) * (tonumber(weights[i]) or 1) / job.cost)
          n = math.min(n, tonumber(lens[i]) or 0)
          if n > 0 then counted = counted + n end
          found = found + 1
        end
      end
    end
    if #others == 2 * SAMPLED and found > 0 then
      local rest = redis.call('ZCOUNT', owners, '-inf', upper) - SAMPLED
      if rest > 0 then counted = counted + math.floor(rest * counted / found + 0.5) end
    end
    ahead = ahead + counted
  end
  return ahead, ahead * job.cost
end

-- Seconds until queued job `job` starts, from the cost ahead of it (`units`), the
-- model's measured seconds per cost unit and its live workers; nil when none.
local function eta(job, units)
  local model = job.queue:match('^darkroom%.model%.(.+)$') or '*'
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local workers = redis.call('ZCOUNT', P .. 'sched:serving:' .. model, now_ms, '+inf')
  if workers == 0 then return nil end
  local rate = tonumber(redis.call('HGET', P .. 'sched:rate', model))
      or tonumber(redis.call('HGET', P .. 'sched:rate', '*')) or 1
  return units * rate / workers
end

-- The record as one JSON object (its fields are JSON values): one string to parse.
local function record_json(id)
  local fields = redis.call('HGETALL', k_job(id))
  local parts = {}
  for i = 1, #fields, 2 do
    parts[#parts + 1] = '"' .. fields[i] .. '":' .. fields[i + 1]
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- Whether every adapter in `list` (ids, comma separated) is in the set `held`.
local function all_held(list, held)
  for id in string.gmatch(list or '', '[^,]+') do
    if not held[id] then return false end
  end
  return true
end

-- Adapters (docs/scheduling.md, "Adapters"): when the job chosen would load LoRA
-- adapters this worker does not hold, a job among the next few of the same key's
-- line (same band, same queue) that needs none it lacks goes first instead,
-- unless the chosen one has waited `swap_after_ms`. Fairness between keys is
-- untouched (the key was chosen); the chosen job is left to a worker that holds
-- its adapters, or to this one once nothing else of its key is ready here.
local function with_adapters_held(best, held, swap_after_ms)
  local need = unquote(redis.call('HGET', k_job(best.id), 'adapters'))
  if all_held(need, held) or best.arrival + swap_after_ms < now_ms() then return best end
  local line = redis.call('ZRANGE', k_jobs(best.queue, best.band, best.owner), 1, 7, 'WITHSCORES')
  for i = 1, #line, 2 do
    if all_held(unquote(redis.call('HGET', k_job(line[i]), 'adapters')), held) then
      return {id = line[i], arrival = tonumber(line[i + 1]), owner = best.owner,
              score = best.score, queue = best.queue, band = best.band}
    end
  end
  return best
end

