-- a1111_save_options: keep the A1111 options a key wrote, all or none, while the
-- key keeps at most `max_options` of them (api/compat/a1111_options.py). Counted
-- and written in one step, so two writers racing cannot pass the bound together.
-- KEY options: the key's options hash (its checkpoint beside the options)
-- ARG prefix: the options' field prefix
-- ARG max_options: how many the key may keep
-- ARG fields...: field, JSON value, ... to write
-- Returns 0 when written, else how many the key would hold (nothing written).
local names = {}
local count = 0
local function note(name)
  if not names[name] and string.sub(name, 1, #ARG.prefix) == ARG.prefix then
    names[name] = true
    count = count + 1
  end
end
for _, name in ipairs(redis.call('HKEYS', KEY.options)) do note(name) end
for i = 1, #ARG.fields, 2 do note(ARG.fields[i]) end
if count > tonumber(ARG.max_options) then return count end
redis.call('HSET', KEY.options, unpack(ARG.fields))
return 0
