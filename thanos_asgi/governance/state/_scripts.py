"""The Lua scripts behind `RedisBackend`: each operation is one script, so it is atomic.

Windows live in a hash {w: window index, n: units used}; a stored index other than the
current one means the window has rolled over and counts as 0. The window is computed from
`redis.call('TIME')`, so every gateway process agrees on it whatever its own clock says.
Budgets live in a hash {s: spent, r: reserved, h:<owner>: the part of r each gateway process
holds}, all integer micro-dollars. Numbers are
written back with `%.0f` so large integers are never rounded by Lua's `%.14g` conversion.
"""

from __future__ import annotations

_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local function int(x) return string.format('%.0f', x) end
"""

# ARGV[...]: window width in microseconds is always the last argument.
_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local width = tonumber(ARGV[#ARGV])
local index = math.floor(now / width)
local reset = (index + 1) * width - now
local stored = redis.call('HMGET', KEYS[1], 'w', 'n')
local used = 0
if tonumber(stored[1]) == index then used = tonumber(stored[2]) or 0 end
local function save(n)
  redis.call('HSET', KEYS[1], 'w', int(index), 'n', int(n))
  redis.call('PEXPIRE', KEYS[1], int(math.ceil(reset / 1000) + 1000))
end
"""

# KEYS[1] window; ARGV: amount, limit, width -> {allowed, used, microseconds to reset}
WINDOW_TAKE = (
    _PRELUDE
    + _WINDOW
    + """
local amount = math.max(0, tonumber(ARGV[1]))
if used + amount > tonumber(ARGV[2]) then return {0, used, reset} end
save(used + amount)
return {1, used + amount, reset}
"""
)

# KEYS[1] window; ARGV: delta, width
WINDOW_ADJUST = (
    _PRELUDE
    + _WINDOW
    + """
save(math.max(0, used + tonumber(ARGV[1])))
return 1
"""
)

_BUDGET = """
local stored = redis.call('HMGET', KEYS[1], 's', 'r')
local spent = tonumber(stored[1]) or 0
local reserved = tonumber(stored[2]) or 0
"""

# KEYS[1] budget, KEYS[2] (optional) the marker that must exist, KEYS[3] (with it) the marker's
# grace key; ARGV: amount, limit, ttl ms, (optional) owner
# -> 1 reserved / 0 refused / 2 the marker is missing (the store lost its data) /
#    {3, ms} the month was just rebuilt: wait ms for every process to re-add its reservations
RESERVE = (
    _PRELUDE
    + """
if #KEYS > 1 then
  if redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
  local wait = redis.call('PTTL', KEYS[3])
  if wait > 0 then return {3, wait} end
end
"""
    + _BUDGET
    + """
local amount = math.max(0, tonumber(ARGV[1]))
if spent + reserved + amount > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 's', int(spent), 'r', int(reserved + amount))
if ARGV[4] then redis.call('HINCRBY', KEYS[1], 'h:' .. ARGV[4], int(amount)) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS[1] budget; ARGV: reserved amount to release, actual cost, ttl ms, (optional) owner.
# With an owner, only what that owner holds in this store is released: a reservation made
# before the store lost its data is not in `r` any more, and must not release others'.
SETTLE = (
    _PRELUDE
    + _BUDGET
    + """
local release = math.max(0, tonumber(ARGV[1]))
if ARGV[4] then
  local field = 'h:' .. ARGV[4]
  local held = tonumber(redis.call('HGET', KEYS[1], field)) or 0
  release = math.min(release, held)
  redis.call('HSET', KEYS[1], field, int(held - release))
end
reserved = math.max(0, reserved - release)
spent = spent + math.max(0, tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 's', int(spent), 'r', int(reserved))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS[1] budget; ARGV: owner, what it holds now, ttl ms. Idempotent: the owner's share of
# `r` becomes exactly that amount (re-adding reservations after the store lost its data).
HOLD = (
    _PRELUDE
    + _BUDGET
    + """
local field = 'h:' .. ARGV[1]
local before = tonumber(redis.call('HGET', KEYS[1], field)) or 0
local now = math.max(0, tonumber(ARGV[2]))
local total = math.max(0, reserved + now - before)
redis.call('HSET', KEYS[1], 's', int(spent), 'r', int(total), field, int(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS[1] marker, KEYS[2] its grace key, KEYS[3..] budgets; ARGV[1] ttl ms, ARGV[2] the new
# generation, ARGV[3] grace ms, ARGV[4..] spent of each budget
# -> 1 restored / 0 the marker was there (someone restored already)
RESTORE = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #KEYS do
  local stored = redis.call('HMGET', KEYS[i], 's', 'r')
  local spent = math.max(tonumber(stored[1]) or 0, tonumber(ARGV[i + 1]))
  redis.call('HSET', KEYS[i], 's', int(spent), 'r', int(tonumber(stored[2]) or 0))
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 1
"""
)
