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

# Windows: `window(key, width)` -> index, microseconds to reset, units used (0 once rolled over).
_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function window(key, width)
  local index = math.floor(now / width)
  local stored = redis.call('HMGET', key, 'w', 'n')
  local used = 0
  if tonumber(stored[1]) == index then used = tonumber(stored[2]) or 0 end
  return index, (index + 1) * width - now, used
end
local function save(key, index, reset, n)
  redis.call('HSET', key, 'w', int(index), 'n', int(n))
  redis.call('PEXPIRE', key, int(math.ceil(reset / 1000) + 1000))
end
local function adjust(key, width, delta)
  local index, reset, used = window(key, width)
  save(key, index, reset, math.max(0, used + delta))
end
"""

# KEYS[1] window; ARGV: amount, limit, width in microseconds -> {allowed, used, us to reset}
WINDOW_TAKE = (
    _PRELUDE
    + _WINDOW
    + """
local index, reset, used = window(KEYS[1], tonumber(ARGV[3]))
local amount = math.max(0, tonumber(ARGV[1]))
if used + amount > tonumber(ARGV[2]) then return {0, used, reset} end
save(KEYS[1], index, reset, used + amount)
return {1, used + amount, reset}
"""
)

# KEYS[1] window; ARGV: delta, width in microseconds
WINDOW_ADJUST = (
    _PRELUDE
    + _WINDOW
    + """
adjust(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[1]))
return 1
"""
)

# Budgets: `budget(key)` -> spent, reserved; `settle(...)` as SETTLE below.
# With an owner, only what that owner holds in this store is released: a reservation made
# before the store lost its data is not in `r` any more, and must not release others'.
_BUDGET = """
local function budget(key)
  local stored = redis.call('HMGET', key, 's', 'r')
  return tonumber(stored[1]) or 0, tonumber(stored[2]) or 0
end
local function settle(key, release, actual, ttl, owner)
  local spent, reserved = budget(key)
  release = math.max(0, release)
  if owner then
    local field = 'h:' .. owner
    local held = tonumber(redis.call('HGET', key, field)) or 0
    release = math.min(release, held)
    redis.call('HSET', key, field, int(held - release))
  end
  reserved = math.max(0, reserved - release)
  spent = spent + math.max(0, actual)
  redis.call('HSET', key, 's', int(spent), 'r', int(reserved))
  redis.call('PEXPIRE', key, ttl)
end
"""

# KEYS[1] budget, KEYS[2] (optional) the marker that must exist, KEYS[3] (with it) the marker's
# grace key; ARGV: amount, limit, ttl ms, (optional) owner
# -> 1 reserved / 0 refused / 2 the marker is missing (the store lost its data) /
#    {3, ms} the month was just rebuilt: wait ms for every process to re-add its reservations
RESERVE = (
    _PRELUDE
    + _BUDGET
    + """
if #KEYS > 1 then
  if redis.call('EXISTS', KEYS[2]) == 0 then return 2 end
  local wait = redis.call('PTTL', KEYS[3])
  if wait > 0 then return {3, wait} end
end
local spent, reserved = budget(KEYS[1])
local amount = math.max(0, tonumber(ARGV[1]))
if spent + reserved + amount > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 's', int(spent), 'r', int(reserved + amount))
if ARGV[4] then redis.call('HINCRBY', KEYS[1], 'h:' .. ARGV[4], int(amount)) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS[1] budget; ARGV: reserved amount to release, actual cost, ttl ms, (optional) owner.
SETTLE = (
    _PRELUDE
    + _BUDGET
    + """
settle(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4])
return 1
"""
)

# What a request leaves behind, in one step: KEYS[1..n] windows to adjust, then budgets to
# settle; ARGV: n, window width in microseconds, ttl ms, owner ('' for none), the n window
# deltas, then per budget the reserved amount to release and the actual cost.
SETTLE_MANY = (
    _PRELUDE
    + _WINDOW
    + _BUDGET
    + """
local n = tonumber(ARGV[1])
local owner = nil
if ARGV[4] ~= '' then owner = ARGV[4] end
for i = 1, n do adjust(KEYS[i], tonumber(ARGV[2]), tonumber(ARGV[4 + i])) end
for i = n + 1, #KEYS do
  local at = 3 + 2 * i - n
  settle(KEYS[i], tonumber(ARGV[at]), tonumber(ARGV[at + 1]), ARGV[3], owner)
end
return 1
"""
)

# A request's tokens per minute and its first attempt's budgets, in one step: KEYS[1] the
# window, KEYS[2] the month's marker, KEYS[3] its grace key, KEYS[4..] budgets; ARGV: tokens,
# token limit, width in microseconds, cost, ttl ms, owner, then each budget's limit
# -> {allowed, used, us to reset, budgets}: a refused window takes nothing; with it taken,
#    budgets is 1 all reserved / 0 one refused, none reserved / 2 the marker is missing or in
#    its grace, none reserved (the caller reserves as RESERVE does, which handles both)
TAKE_AND_RESERVE = (
    _PRELUDE
    + _WINDOW
    + _BUDGET
    + """
local index, reset, used = window(KEYS[1], tonumber(ARGV[3]))
local amount = math.max(0, tonumber(ARGV[1]))
if used + amount > tonumber(ARGV[2]) then return {0, used, reset, 0} end
used = used + amount
save(KEYS[1], index, reset, used)
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('PTTL', KEYS[3]) > 0 then
  return {1, used, reset, 2}
end
local cost = math.max(0, tonumber(ARGV[4]))
for i = 4, #KEYS do
  local spent, reserved = budget(KEYS[i])
  if spent + reserved + cost > tonumber(ARGV[3 + i]) then return {1, used, reset, 0} end
end
for i = 4, #KEYS do
  local spent, reserved = budget(KEYS[i])
  redis.call('HSET', KEYS[i], 's', int(spent), 'r', int(reserved + cost))
  redis.call('HINCRBY', KEYS[i], 'h:' .. ARGV[6], int(cost))
  redis.call('PEXPIRE', KEYS[i], ARGV[5])
end
return {1, used, reset, 1}
"""
)

# KEYS[1] budget; ARGV: owner, what it holds now, ttl ms. Idempotent: the owner's share of
# `r` becomes exactly that amount (re-adding reservations after the store lost its data).
HOLD = (
    _PRELUDE
    + _BUDGET
    + """
local spent, reserved = budget(KEYS[1])
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
