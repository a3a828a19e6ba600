"""The Lua scripts of the Redis store, and running them while Redis is out of memory.

Each script is atomic on the server: a claim takes the members of a bound request
together, a trim drops them together, an update settles a batch of SMS in one call.
Times inside a script come from the server (``TIME``).

Scripts that only settle what Redis holds are registered twice: flagged ``allow-oom``
(Redis 7.0 and later run them while ``maxmemory`` is reached, and as a sent SMS is
deleted they free memory) and plain, for a server that knows no script flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from ..._log import get_logger

_log = get_logger("sslsms_notify.stores.redis")

_RATE = """
local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = 1 / tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat + interval - burst * interval - now
if wait < 0 then wait = 0 end
if wait == 0 or ARGV[3] == '1' then
  redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil((tat + interval - now) * 1000) + 1000)
end
return tostring(wait)
"""

# KEYS: due zset, items hash, claimed hash. ARGV: limit, lease, prefix of the binding sets.
# Returns ids, items, taken-over flags ("1": it was in flight under a lease that ran out),
# and the lease's end. The members of a bound request are claimed together, due or not.
_CLAIM = """
local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #ids == 0 then return {{}, {}, {}, tostring(now)} end
local seen, batches = {}, {}
for _, id in ipairs(ids) do seen[id] = true end
local first = redis.call('HMGET', KEYS[2], unpack(ids))
for i = 1, #ids do
  if first[i] then
    local batch = cjson.decode(first[i])[7]
    if batch and batch ~= '' and not batches[batch] then
      batches[batch] = true
      for _, member in ipairs(redis.call('SMEMBERS', ARGV[3] .. batch)) do
        if not seen[member] then
          local score = redis.call('ZSCORE', KEYS[1], member)
          local raw = redis.call('HGET', KEYS[2], member)
          local leased = redis.call('HEXISTS', KEYS[3], member) == 1
          if score and raw and (not leased or tonumber(score) <= now)
             and cjson.decode(raw)[7] == batch then
            seen[member] = true
            table.insert(ids, member)
          end
        end
      end
    end
  end
end
local vals = redis.call('HMGET', KEYS[2], unpack(ids))
local until_at = now + tonumber(ARGV[2])
local live_ids, live, flags, scores, marks, gone = {}, {}, {}, {}, {}, {}
for i, id in ipairs(ids) do
  if vals[i] then
    table.insert(live_ids, id)
    table.insert(live, vals[i])
    table.insert(flags, tostring(redis.call('HEXISTS', KEYS[3], id)))
    table.insert(scores, until_at) table.insert(scores, id)
    table.insert(marks, id) table.insert(marks, tostring(until_at))
  else
    table.insert(gone, id)
  end
end
if #scores > 0 then
  redis.call('ZADD', KEYS[1], unpack(scores))
  redis.call('HSET', KEYS[3], unpack(marks))
end
if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
return {live_ids, live, flags, tostring(until_at)}
"""

# KEYS: due zset, claimed hash. ARGV: lease, ids...
_RENEW = """
local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_at = now + tonumber(ARGV[1])
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then
    redis.call('ZADD', KEYS[1], 'XX', until_at, ARGV[i])
    redis.call('HSET', KEYS[2], ARGV[i], tostring(until_at))
  end
end
return 1
"""

# KEYS: due zset, claimed hash. Pending (unclaimed) SMS in backoff become due now.
_RESUME = """
local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local resumed = 0
for _, id in ipairs(ids) do
  if redis.call('HEXISTS', KEYS[2], id) == 0 then
    redis.call('ZADD', KEYS[1], now, id)
    resumed = resumed + 1
  end
end
return resumed
"""

# KEYS: due, items, claimed, dead. ARGV: max_open, reason, prefix of the binding sets.
# A bound request's pending members go together.
_TRIM = """
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return {} end
local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local dropped, seen, batches = {}, {}, {}
local function drop(id, raw)
  local item = cjson.decode(raw)
  item[6] = 'dead'
  item[8] = ARGV[2]
  local encoded = cjson.encode(item)
  redis.call('HSET', KEYS[2], id, encoded)
  table.insert(dropped, id) table.insert(dropped, encoded)
  seen[id] = true
  return item[7]
end
local taken = 0
local offset = 0
while taken < excess do
  local ids = redis.call('ZRANGE', KEYS[1], offset, offset + 499)
  if #ids == 0 then break end
  offset = offset + #ids
  for _, id in ipairs(ids) do
    if taken >= excess then break end
    if not seen[id] and redis.call('HEXISTS', KEYS[3], id) == 0 then
      local raw = redis.call('HGET', KEYS[2], id)
      if raw then
        local batch = drop(id, raw)
        taken = taken + 1
        if batch and batch ~= '' and not batches[batch] then
          batches[batch] = true
          for _, member in ipairs(redis.call('SMEMBERS', ARGV[3] .. batch)) do
            if not seen[member] and redis.call('HEXISTS', KEYS[3], member) == 0
               and redis.call('ZSCORE', KEYS[1], member) then
              local other = redis.call('HGET', KEYS[2], member)
              if other and cjson.decode(other)[7] == batch then drop(member, other) end
            end
          end
        end
      end
    end
  end
end
for i = 1, #dropped, 2 do
  redis.call('ZREM', KEYS[1], dropped[i])
  redis.call('ZADD', KEYS[4], now, dropped[i])
end
return dropped
"""

# KEYS: items, due, dead, claimed. ARGV: prefix of the binding sets, their ttl, then five
# per SMS: id, state, encoded item, score, binding id ("" for none). A sent SMS is deleted.
_UPDATE = """
for i = 3, #ARGV, 5 do
  local id, state, raw, score, batch = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if state == 'sent' then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HDEL', KEYS[4], id)
  else
    redis.call('HSET', KEYS[1], id, raw)
    if batch ~= '' then
      redis.call('SADD', ARGV[1] .. batch, id)
      redis.call('EXPIRE', ARGV[1] .. batch, tonumber(ARGV[2]))
    end
    if state == 'dead' then
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZADD', KEYS[3], score, id)
    else
      redis.call('ZADD', KEYS[2], score, id)
      redis.call('ZREM', KEYS[3], id)
    end
    if state ~= 'inflight' then redis.call('HDEL', KEYS[4], id) end
  end
end
return 1
"""

# KEYS: items, dead. ARGV: dead letters that died before this time are forgotten.
_EXPIRE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1])
for i = 1, #ids, 500 do
  local chunk = {unpack(ids, i, math.min(i + 499, #ids))}
  redis.call('HDEL', KEYS[1], unpack(chunk))
  redis.call('ZREM', KEYS[2], unpack(chunk))
end
return #ids
"""

# The marker that tells whether Redis lost data. KEYS: marker hash, items, dead. ARGV: a
# token to set if the marker is gone, then ids of SMS to look up. Returns the token, the
# counter after its increment, and per id "0" (gone), "1" (open) or "2" (a dead letter).
_EPOCH = """
local token = redis.call('HGET', KEYS[1], 'token')
if not token then
  token = ARGV[1]
  redis.call('HSET', KEYS[1], 'token', token)
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local flags = {}
for i = 2, #ARGV do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then flags[#flags + 1] = '0'
  elseif redis.call('ZSCORE', KEYS[3], ARGV[i]) then flags[#flags + 1] = '2'
  else flags[#flags + 1] = '1' end
end
return {token, n, table.concat(flags)}
"""

# Re-adds SMS Redis lost. KEYS: items, due, claimed, dead. ARGV: prefix of the binding sets,
# their ttl, then five per SMS: id, encoded item, due score, lease end ("" unless this process
# has it in flight), binding id. An SMS Redis has stays unless ours is newer: more attempts,
# or as many and bound (a binding is made after one attempt's outcome, undone by the next's).
_READD = """
local added = 0
for i = 3, #ARGV, 5 do
  local id, raw, score, lease, batch = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local take = true
  local old = redis.call('HGET', KEYS[1], id)
  if old then
    local o, n = cjson.decode(old), cjson.decode(raw)
    local oa, na = tonumber(o[5]), tonumber(n[5])
    local ob, nb = (o[7] ~= '' and 1 or 0), (n[7] ~= '' and 1 or 0)
    take = na > oa or (na == oa and nb > ob)
  end
  if take then
    redis.call('HSET', KEYS[1], id, raw)
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZADD', KEYS[2], score, id)
    if lease ~= '' then redis.call('HSET', KEYS[3], id, lease) else redis.call('HDEL', KEYS[3], id) end
    if batch ~= '' then
      redis.call('SADD', ARGV[1] .. batch, id)
      redis.call('EXPIRE', ARGV[1] .. batch, tonumber(ARGV[2]))
    end
    added = added + 1
  end
end
return added
"""

#: name: (body, whether it runs while Redis is out of memory). Those that do only settle
#: what Redis holds (claim, renew, record outcomes, pace, trim, forget dead letters, check
#: the marker): on balance they free memory, since a sent SMS is deleted. Redis before 7.0
#: knows no script flags: there they are refused like any write while it is out of memory.
SCRIPTS: dict[str, tuple[str, bool]] = {
    "rate": (_RATE, True),
    "claim": (_CLAIM, True),
    "renew": (_RENEW, True),
    "trim": (_TRIM, True),
    "resume": (_RESUME, True),
    "update": (_UPDATE, True),
    "expire": (_EXPIRE, True),
    "epoch": (_EPOCH, True),
    "readd": (_READD, False),
}
_ALLOW_OOM = "#!lua flags=allow-oom\n"


def no_script_flags(exc: BaseException) -> bool:
    """A server that cannot read ``#!lua flags=...`` (before Redis 7.0, or a lookalike)."""
    text = str(exc).lower()
    return "shebang" in text or ("compil" in text and "script" in text)


class Scripts:
    """The scripts registered on a client: :meth:`run` one by name.

    ``allow_oom`` says whether the server takes script flags (None: not known yet); it
    is learnt from the first flagged script the server runs or refuses to compile.
    """

    def __init__(self, client: Any) -> None:
        # Each script twice: flagged to run while Redis is out of memory (Redis 7+), and plain.
        self._scripts = {
            name: (
                client.register_script(_ALLOW_OOM + body) if oom else None,
                client.register_script(body),
            )
            for name, (body, oom) in SCRIPTS.items()
        }
        #: whether the server takes script flags (None: not known yet)
        self.allow_oom: bool | None = None

    def run(self, name: str, keys: list[str], args: Sequence[Any] = (), *, client: Any = None) -> Any:
        """Run script ``name``: flagged while the server may take flags, else plain.

        ``client``: another client on the same server (one connection, for a ``WAIT`` after it).
        """
        flagged, plain = self._scripts[name]
        if flagged is not None and self.allow_oom is not False:
            try:
                result = flagged(keys=keys, args=list(args), client=client)
            except redis.ResponseError as exc:
                if not no_script_flags(exc):
                    raise
                self.allow_oom = False
                _log.info(
                    "Redis takes no script flags (before 7.0): while it is out of memory, "
                    "the SMS it holds wait until it has room again"
                )
            else:
                self.allow_oom = True
                return result
        return plain(keys=keys, args=list(args), client=client)
