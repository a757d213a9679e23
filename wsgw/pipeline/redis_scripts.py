"""Lua sources run by the cluster limits (wsgw/pipeline/cluster/) inside Redis.

Every script reads the clock with Redis TIME, so the gateway processes' clocks never need to
agree. Redis Lua numbers are doubles and Redis turns a number argument into a string with only
14 significant digits, so every number written back is formatted with ``%.17g`` (an exact
round trip for a double); microsecond timestamps (~1.7e15) and token counts below 2**53 are
exact integers in a double.
"""

# A shared token bucket, one hash per limit key: fields m and b (message and byte levels,
# tokens, fractional), t (Redis time of the last refill, microseconds).
# KEYS[1] bucket hash.
# ARGV: for messages then bytes, five numbers each: rate per minute (0 = dimension
#       unlimited, untouched), capacity, tokens wanted, tokens given back, share.
# Refill continuously (rate/60 tokens per second) up to capacity, add the give-back (capped),
# then grant min(wanted, whole tokens in the bucket, max(share, half of them)): one request
# never takes more than half of what is left unless that is below the share. A missing hash
# is a full bucket (the key expires once it would have refilled, so expiry never changes the
# outcome; the expiry is capped at 30 days, reached only with a burst > 40 000 x the rate).
# Returns {messages granted, bytes granted, whole messages left, whole bytes left}.
LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local h = redis.call('HMGET', KEYS[1], 't', 'm', 'b')
local last = tonumber(h[1])
if last ~= nil and now < last then now = last end
local out = {0, 0, 0, 0}
local fields = {'t', string.format('%.17g', now)}
local ttl_ms = 1000
for i = 1, 2 do
  local base = (i - 1) * 5
  local rate = tonumber(ARGV[base + 1])
  if rate > 0 then
    local cap = tonumber(ARGV[base + 2])
    local want = tonumber(ARGV[base + 3])
    local back = tonumber(ARGV[base + 4])
    local level = tonumber(h[i + 1])
    if level == nil or last == nil then
      level = cap
    else
      level = level + (now - last) * rate / 60000000
    end
    level = level + back
    if level > cap then level = cap end
    local share = tonumber(ARGV[base + 5])
    local g = math.floor(level)
    local most = math.floor(g / 2)
    if most < share then most = share end
    if g > most then g = most end
    if g > want then g = want end
    if g < 0 then g = 0 end
    level = level - g
    local fill_ms = math.ceil((cap - level) * 60000 / rate) + 1000
    if fill_ms > ttl_ms then ttl_ms = fill_ms end
    fields[#fields + 1] = i == 1 and 'm' or 'b'
    fields[#fields + 1] = string.format('%.17g', level)
    out[i] = g
    out[i + 2] = math.floor(level)
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
if ttl_ms > 2592000000 then ttl_ms = 2592000000 end
redis.call('PEXPIRE', KEYS[1], string.format('%.17g', ttl_ms))
return out
"""

# Process registry: a sorted set, member = process id, score = expiry (Redis time, ms).
# KEYS[1] registry; ARGV[1] process id, ARGV[2] ttl ms. Returns the number of live processes.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%.17g', now))
redis.call('ZADD', KEYS[1], string.format('%.17g', now + ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[1], string.format('%.17g', ttl * 4))
return redis.call('ZCARD', KEYS[1])
"""

# Connection cap: one hash per scope key, field = process id, value = its open connections.
# Counts of processes missing from the registry (crashed: their heartbeat expired) are
# deleted before counting. KEYS[1] counts hash, KEYS[2] registry; ARGV[1] process id,
# ARGV[2] max connections. Returns 1 (taken) or 0 (cap full).
CONN_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local counts = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #counts, 2 do
  local pid = counts[i]
  local expiry = redis.call('ZSCORE', KEYS[2], pid)
  if pid ~= ARGV[1] and (not expiry or tonumber(expiry) < now) then
    redis.call('HDEL', KEYS[1], pid)
  else
    total = total + tonumber(counts[i + 1])
  end
end
if total >= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"""

# KEYS[1] counts hash; ARGV[1] process id. Returns this process's remaining count.
CONN_RELEASE = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  n = 0
end
return n
"""

# Re-sync after a reconnect (Redis may have restarted empty, or dropped our counts).
# KEYS[1] counts hash; ARGV[1] process id, ARGV[2] this process's count (0 deletes).
CONN_SET = """
local n = tonumber(ARGV[2])
if n > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], n)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return n
"""

ALL = {
    "lease": LEASE,
    "heartbeat": HEARTBEAT,
    "conn_acquire": CONN_ACQUIRE,
    "conn_release": CONN_RELEASE,
    "conn_set": CONN_SET,
}
