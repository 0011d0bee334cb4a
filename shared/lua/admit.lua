-- admit: count a new job against its key's rate limits (rate_limits.lua), or refuse
-- it. Returns {0, 0} when admitted, else {verdict, ms until a slot frees}.
-- uses: sched rate_limits
local refused, now_ms = rate_check()
if refused then return refused end
rate_record(now_ms)
return {0, 0}
