"""The Lua the fleet runs inside Redis, where a step must be atomic across daemons.

* ``PUBLISH``: for each outcome, claim its call key (``SET NX PX``: the same call reported by two
  daemons counts once) and only then append it to the shared stream, trimming the stream to the
  retention (``XADD MINID ~``: entries older than the longest window go, so memory follows the windows).
* ``LEASE``: take or renew the notifier lease when it is free or already ours; otherwise say who holds it.
* ``RELEASE``: give the lease up, only if it is still ours (a graceful stop hands over at once).
* ``TOLD``: record "this alert's transition was told to this notifier" unless a later one already was.
"""

from __future__ import annotations

PUBLISH = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retention = tonumber(ARGV[1])
local minid = tostring(now_ms - retention) .. '-0'
local out = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'PX', retention) then
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MINID', '~', minid, '*', 'o', ARGV[i])
  else
    out[#out + 1] = ''
  end
end
return out
"""

LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, ARGV[1]}
end
return {0, holder}
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# a told entry is "state|at|member": at is the transition's own time (the alert's start for a firing, its
# resolve time for a resolve), so a member that tells late never overwrites a later transition
TOLD = """
local ttl = ARGV[1]
for i = 1, #KEYS do
  local new = ARGV[i + 1]
  local cur = redis.call('GET', KEYS[i])
  local keep = false
  if cur then
    local cur_at = tonumber(string.match(cur, '^[^|]*|([^|]*)|'))
    local new_at = tonumber(string.match(new, '^[^|]*|([^|]*)|'))
    if cur_at and new_at and cur_at > new_at then
      keep = true
    end
  end
  if not keep then
    redis.call('SET', KEYS[i], new, 'EX', ttl)
  end
end
return #KEYS
"""
