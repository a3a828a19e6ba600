"""Redis store: dedup windows, caps, pacing and the outbox shared by many processes and hosts.

Transactions ``WATCH`` every row they read and commit with ``MULTI``/``EXEC``;
a conflict with another process reruns the transaction. Times come from the
server (``TIME``), so hosts with drifting clocks agree on windows and rates.
Commands carry many members each (one ``HSET`` for a whole batch of SMS, one
``ZADD`` for their due times), so a round costs a few round trips, not a few
per SMS.

**When Redis fails**, nothing is silently downgraded to memory: the store falls
back to a **spool**, a SQLite file on this host (one per Redis URL, shared by
the host's processes), logs that once per outage, saying what happened, and
tries Redis again every few seconds. Two kinds of failure:

- *unreachable* (connection refused or lost, timeouts, ``LOADING``): everything
  goes to the spool;
- *writes refused* while Redis still answers: out of memory (``maxmemory`` with
  ``noeviction``), a read-only replica (after a failover), ``MISCONF`` (it cannot
  persist) or ``NOREPLICAS``: new alerts, windows and SMS go to the spool. Out of
  memory, the SMS Redis already holds are still claimed, sent and settled there
  (those scripts carry ``allow-oom``, Redis 7+: sending an SMS deletes it, so they
  free memory overall); a read-only replica takes no write at all.

A write Redis refused was not applied at all: Redis refuses every command queued
in a ``MULTI`` and aborts the ``EXEC`` whole (verified for OOM and READONLY), and
a script is refused at its first write, before it changed anything. So the spool
reruns the whole transaction, with the same csms_ids (see ``IdBook``).

While Redis fails, dedup and caps hold per host, not across hosts (a repeat may
page once more). When Redis takes writes again, spooled SMS move there keeping
their csms_id, and so do the windows, digests, group buffers and caps opened in
the spool, merged with what Redis has (see :func:`merge_window`).

**A Redis that loses its data** (a restart without persistence, an RDB snapshot
older than the last writes, a failover to a replica that lagged) is noticed
within a second or so: the store keeps a marker (``{prefix}epoch``: a token and
a counter every check increments) that vanishes or goes back. It then logs it
and re-adds the SMS this process still knows are pending (a bounded journal of
what it wrote or claimed, kept until it records them sent or dead), with
``maybe_sent`` set and their bindings kept, so one the gateway already took is
answered "Duplicate CMS ID" and counted delivered, once. At start, one line says
whether the server persists (AOF, RDB) and what a restart would lose.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from .._log import get_logger
from ..paths import state_dir
from ..validation import mask_credentials
from .base import (
    RECORDS,
    Digest,
    GroupBuffer,
    IndexedTable,
    OutboxCounts,
    OutboxItem,
    OutboxState,
    StoreHealth,
    StoreUnavailableError,
    TableName,
    Tx,
    Window,
    record_fields,
    record_from,
    record_time,
)
from .merge import (
    DIGEST_KEEP,
    GROUP_KEEP,
    merge_digest,
    merge_group,
    merge_lifecycle,
    merge_rate,
    merge_window,
)
from .sqlite import SQLiteStore

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("the Redis store needs: pip install 'sslsms-notify[redis]'") from exc

_log = get_logger("sslsms_notify.stores.redis")
T = TypeVar("T")
RETRY_REDIS_AFTER = 3.0
#: refused writes are logged as over once Redis has taken writes this long without refusing
#: one: a Redis at the edge of maxmemory takes a write, refuses the next, and so on (one
#: line when the trouble starts and one when it is over, not a pair per flap)
WRITES_BACK_QUIET = 30.0
MAX_CONFLICTS = 100
_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)
#: the SMS this process remembers it wrote or claimed (re-added if Redis loses them)
JOURNAL_MAX = 50_000
#: ... for at most this long (the dispatcher's default ``max_age``: older ones are dead letters)
JOURNAL_AGE = 3600.0
#: ids per marker check or re-add script call
_CHUNK = 2000
#: rows (windows, digests, groups, rates) moved from the spool to Redis per housekeeping round
MOVE_ROWS = 500

#: what a call does to Redis, which decides where it goes while Redis fails:
#: "read" goes to Redis unless it is unreachable; "drain" (claim, renew, settle SMS, pace)
#: also while it is out of memory; "write" (new alerts, windows, SMS) only when it takes writes
Access = Literal["read", "drain", "write"]

UNREACHABLE = "unreachable"
OUT_OF_MEMORY = "out of memory"
READ_ONLY = "read-only replica"
CANNOT_PERSIST = "cannot persist"
NO_REPLICAS = "not enough replicas"
#: error codes of a Redis that answers but refuses writes (redis-py strips the code of the
#: ones it has a class for; a script error before Redis 7 carries it after a "-")
_REFUSALS = {
    "OOM": OUT_OF_MEMORY,
    "READONLY": READ_ONLY,
    "MISCONF": CANNOT_PERSIST,
    "NOREPLICAS": NO_REPLICAS,
}
#: redis-py's classes for two of them (OutOfMemoryError is missing from older releases and the stubs)
_OOM_ERROR: type[Exception] = getattr(redis.exceptions, "OutOfMemoryError", redis.exceptions.ReadOnlyError)
_REFUSAL_CODE = re.compile(r"(?:^|-)(OOM|READONLY|MISCONF|NOREPLICAS)\b")
_PIPELINE_ERROR = "of pipeline caused error: "
_WHAT_HAPPENED = {
    UNREACHABLE: "Redis unreachable",
    OUT_OF_MEMORY: "Redis refuses writes: out of memory (maxmemory reached); SMS it holds are still sent",
    READ_ONLY: "Redis refuses writes: it is a read-only replica (a failover? point the URL at the master)",
    CANNOT_PERSIST: "Redis refuses writes: it cannot persist to disk (MISCONF)",
    NO_REPLICAS: "Redis refuses writes: not enough replicas (min-replicas-to-write)",
}


def fault_of(exc: BaseException) -> str | None:
    """What a failed Redis call says about Redis: unreachable, a refused write, or None (a bug of ours)."""
    if isinstance(exc, _DOWN):
        return UNREACHABLE
    if isinstance(exc, redis.exceptions.MasterDownError):  # a replica cut off from its master
        return UNREACHABLE
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return READ_ONLY
    if isinstance(exc, _OOM_ERROR):
        return OUT_OF_MEMORY
    if isinstance(exc, redis.ResponseError) and not isinstance(exc, redis.exceptions.NoScriptError):
        # redis-py puts "Command # 1 (ZADD ...) of pipeline caused error: " before a pipeline's
        # error; the command's arguments (an alert's text) are not Redis speaking.
        said = str(exc).rsplit(_PIPELINE_ERROR, 1)[-1]
        found = _REFUSAL_CODE.search(said)
        if found:
            return _REFUSALS[found.group(1)]
    return None


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
#: how long the member set of a bound request outlives its last write (claims and
#: trims read it; an entry whose item has moved on is ignored)
BINDING_TTL = 8 * 24 * 3600

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
_SCRIPTS: dict[str, tuple[str, bool]] = {
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


def _no_script_flags(exc: BaseException) -> bool:
    """A server that cannot read ``#!lua flags=...`` (before Redis 7.0, or a lookalike)."""
    text = str(exc).lower()
    return "shebang" in text or ("compil" in text and "script" in text)


def _item_json(item: OutboxItem) -> str:
    return json.dumps(
        [
            item.msisdn,
            item.text,
            item.created_at,
            item.next_attempt_at,
            item.attempts,
            item.state.value,
            item.batch_id or "",
            item.last_error,
            int(item.maybe_sent),
            item.batch_kind,
            item.batch_size,
        ],
        ensure_ascii=False,
    )


def _item_from(csms_id: str, raw: str, score: float | None = None, claimed: bool = False) -> OutboxItem:
    f = json.loads(raw)
    if len(f) < 11:  # written by 0.2: a binding of unknown kind (bulk) and size
        f += ["", 0]
    state = OutboxState(f[5])
    if state is not OutboxState.DEAD:
        state = OutboxState.INFLIGHT if claimed else OutboxState.PENDING
    return OutboxItem(
        csms_id=csms_id,
        msisdn=f[0],
        text=f[1],
        created_at=float(f[2]),
        next_attempt_at=float(score if score is not None else f[3]),
        attempts=int(f[4]),
        state=state,
        batch_id=f[6] or None,
        last_error=f[7],
        maybe_sent=bool(f[8]),
        batch_kind=f[9],
        batch_size=int(f[10]),
    )


def _encode_row(table: str, row: Any) -> str:
    if table in RECORDS:
        return json.dumps(record_fields(row), ensure_ascii=False)
    if table == "windows":
        return json.dumps(
            [row.end_at, row.count, row.since_at, row.last_at, row.last_text, list(row.numbers)],
            ensure_ascii=False,
        )
    if table == "digests":
        return json.dumps([row.count, row.since_at, list(row.texts), row.ready_at], ensure_ascii=False)
    return json.dumps([row.deadline, row.count, list(row.texts), list(row.numbers)], ensure_ascii=False)


def _decode_row(table: str, key: str, raw: str) -> Any:
    if table == "rates":
        return float(raw)
    f = json.loads(raw)
    if table in RECORDS:
        return record_from(table, key, f)
    if table == "windows":
        return Window(key, f[0], f[1], f[2], f[3], f[4], tuple(f[5]))
    if table == "digests":
        return Digest(key, f[0], f[1], tuple(f[2]), f[3])
    return GroupBuffer(key, f[0], f[1], tuple(f[2]), tuple(f[3]))


def _time_of(table: str, row: Any) -> float:
    if table in RECORDS:
        return record_time(table, row)
    return float(row.end_at if table == "windows" else row.ready_at if table == "digests" else row.deadline)


_ROW_PREFIX = {"windows": "w:", "rates": "r:", "digests": "dg:", "groups": "g:", "lifecycles": "lc:"}
#: tables whose rows have a time index (a sorted set named after the table)
_INDEXED = ("windows", "digests", "groups", *RECORDS)


def _masked(url: str) -> str:
    return mask_credentials(url)


def default_spool_path(url: str) -> Path:
    """``$XDG_STATE_HOME/sslsms-notify/redis-spool-<hash of the URL>.db``."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return state_dir() / f"redis-spool-{digest}.db"


class _RedisTx:
    """The Backend of a :class:`Tx` on Redis: reads WATCH what they load."""

    def __init__(self, store: RedisStore, pipe: Any) -> None:
        self.store = store
        self.pipe = pipe

    def load(self, table: TableName, keys: list[str]) -> dict[str, object]:
        names = [self.store._k(_ROW_PREFIX[table], k) for k in keys]
        self.pipe.watch(*names)
        found: dict[str, object] = {}
        for key, raw in zip(keys, self.pipe.mget(names), strict=True):
            if raw is not None:
                found[key] = _decode_row(table, key, raw)
        return found

    def due(self, table: IndexedTable, now: float, limit: int) -> list[str]:
        return list(self.pipe.zrangebyscore(self.store._k(table), "-inf", now, start=0, num=limit))

    def earliest(self, table: IndexedTable, limit: int) -> list[str]:
        return list(self.pipe.zrange(self.store._k(table), 0, limit - 1))

    def count(self, table: IndexedTable) -> int:
        return int(self.pipe.zcard(self.store._k(table)))


def describe_persistence(info: dict[str, Any], config: dict[str, str]) -> tuple[str, bool]:
    """One line on what a restart of this Redis would lose, and whether that is worth a warning.

    ``info``: ``INFO persistence``, ``memory`` and ``replication`` merged; ``config``:
    ``appendonly``, ``appendfsync`` and ``save`` from ``CONFIG GET`` (empty when CONFIG
    is not allowed, as on many managed services: then only AOF is known).
    """
    appendonly = config.get("appendonly")
    aof = appendonly == "yes" if appendonly is not None else bool(info.get("aof_enabled"))
    fsync = config.get("appendfsync")
    save = config.get("save")
    if aof and fsync == "always":
        kept, loses, warn = "persists with AOF (appendfsync always)", "no write it acknowledged", False
    elif aof and fsync == "no":
        kept, loses, warn = (
            "persists with AOF (appendfsync no)",
            "the writes the OS had not flushed to disk yet (often up to 30 s)",
            True,
        )
    elif aof:
        kept = "persists with AOF (appendfsync everysec)" if fsync else "persists with AOF"
        loses, warn = "at most about the last second of writes", False
    elif save:
        spans = [int(s) for s in save.split()[::2] if s.isdigit()]
        longest = f" (up to {max(spans)} s)" if spans else ""
        kept = f"persists with RDB snapshots only (save {save})"
        loses = f"the writes since the last snapshot{longest}: pending SMS, dedup windows, caps"
        warn = True
    elif save == "":
        kept, warn = "does not persist (no AOF, no RDB snapshots)", True
        loses = "everything it holds: pending SMS, dedup windows, caps, digests, group buffers"
    else:
        kept, warn = "persists without AOF; its RDB snapshots are unknown (CONFIG not allowed)", True
        loses = "the writes since its last snapshot, or everything if it takes none"
    line = f"Redis {kept}: a restart loses {loses}"
    if warn:
        line += (
            " (this process re-adds the SMS it knows are pending; configure appendonly yes, "
            "appendfsync everysec)"
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if int(info.get("maxmemory", 0) or 0) > 0 and policy != "noeviction":
        line += f"; maxmemory-policy {policy}: when full, Redis may evict pending SMS (use noeviction)"
        warn = True
    if info.get("role") == "slave":
        line += "; this server is a read-only replica: writes are refused"
        warn = True
    return line, warn


class RedisStore:
    """The :class:`~.base.Store` on a Redis server (``store="redis://host:6379/0"``).

    Durable (as durable as the server's persistence: see :func:`describe_persistence`),
    and shared by every process on every host; times come from the server.
    ``prefix`` starts every key; ``spool`` is the SQLite file used while Redis fails
    (default: one per URL in the state directory).
    """

    durable = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sslsms:",
        socket_timeout: float = 2.0,
        spool: str | Path | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        try:
            # Any: the published stubs lag redis-py (zmscore untyped, invariant mappings).
            self._client: Any = redis.Redis.from_url(
                url,
                decode_responses=True,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise StoreUnavailableError(f"store {_masked(url)}: {exc}") from None
        # Each script twice: flagged to run while Redis is out of memory (Redis 7+), and plain.
        self._scripts = {
            name: (
                self._client.register_script(_ALLOW_OOM + body) if oom else None,
                self._client.register_script(body),
            )
            for name, (body, oom) in _SCRIPTS.items()
        }
        #: whether the server takes script flags (None: not known yet)
        self._allow_oom: bool | None = None
        self.spool_path = Path(spool).expanduser() if spool is not None else default_spool_path(url)
        self._spool: SQLiteStore | None = None
        if self.spool_path.exists():  # left by an earlier process while Redis was down
            self._spool = SQLiteStore(self.spool_path)
        self._spool_lock = threading.Lock()
        self._spool_claims: set[str] = set()
        self._claim_turn = False
        # What is wrong with Redis: unreachable since (monotonic), or refusing writes (why, since).
        self._state_lock = threading.Lock()
        self._down_since: float | None = None
        self._refused: str | None = None
        self._refused_at = 0.0
        #: the failure logged for the current outage (one line per outage and kind)
        self._logged: str | None = None
        #: when Redis last took a write after refusing (monotonic)
        self._writes_back_at = 0.0
        #: what the server keeps across a restart, once it has answered (see describe_persistence)
        self.persistence: str | None = None
        # The marker that tells whether Redis lost data, and what this process would re-add.
        self._token: str | None = None
        self._epoch = 0
        self._marker_lock = threading.Lock()
        self._journal: OrderedDict[str, tuple[float, OutboxItem]] = OrderedDict()
        self._journal_lock = threading.Lock()
        self._counts = {"data_lost": 0, "readded": 0, "journal_dropped": 0, "rows_moved": 0}
        self._check_configuration()

    def _check_configuration(self) -> None:
        """A wrong password or database number is configuration, not an outage: say so now.

        An unreachable server is left to the spool (it may come back); a server that
        answers but refuses us would otherwise make every SMS wait in the spool for good.
        """
        try:
            self._client.ping()
        except redis.AuthenticationError as exc:
            raise StoreUnavailableError(
                f"store {_masked(self.url)}: Redis refused the credentials: {exc}"
            ) from None
        except redis.ResponseError as exc:
            raise StoreUnavailableError(f"store {_masked(self.url)}: {exc}") from None
        except _DOWN:
            return  # not reachable now: the spool takes over until it is
        self._describe_server()
        self._check_marker()  # the marker's starting point

    def __repr__(self) -> str:
        return f"RedisStore({_masked(self.url)!r})"

    def _k(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    # -- what Redis can do now, and the spool ---------------------------------------
    @property
    def degraded(self) -> bool:
        """Redis is unreachable or refuses writes: new state goes to the spool."""
        return self._down_since is not None or self._refused is not None

    @property
    def fault(self) -> str | None:
        """What is wrong with Redis now (None: nothing): ``unreachable``, ``out of memory``,
        ``read-only replica``, ``cannot persist`` or ``not enough replicas``."""
        if self._down_since is not None:
            return UNREACHABLE
        return self._refused

    def _may_use(self, access: Access) -> bool:
        now = time.monotonic()
        if self._down_since is not None and now - self._down_since < RETRY_REDIS_AFTER:
            return False
        if access == "read" or self._refused is None or now - self._refused_at >= RETRY_REDIS_AFTER:
            return True
        return access == "drain" and self._refused == OUT_OF_MEMORY and self._allow_oom is not False

    def _failed(self, fault: str, exc: BaseException) -> None:
        with self._state_lock:
            if fault == UNREACHABLE:
                self._down_since = time.monotonic()
            else:
                self._refused, self._refused_at = fault, time.monotonic()
            first = self._logged != fault
            self._logged = fault
        if first:
            refused = isinstance(exc, redis.AuthenticationError)
            what = "Redis refused our credentials" if refused else _WHAT_HAPPENED[fault]
            _log.error(
                what + "; new alerts and SMS go to a local spool until it takes them "
                "(dedup and caps hold per host meanwhile)",
                spool=str(self.spool_path),
                error=f"{type(exc).__name__}: {exc}",
            )

    def _succeeded(self, access: Access) -> None:
        """A call went through: Redis answers; after a write, it takes writes again.

        What the calls do changes at once; the log says a refusal is over only once
        writes have been taken for :data:`WRITES_BACK_QUIET` seconds since the last.
        """
        if self._down_since is None and (
            access != "write" or (self._refused is None and self._logged is None)
        ):
            return
        now = time.monotonic()
        said = ""
        with self._state_lock:
            answered = self._down_since is not None
            self._down_since = None
            if answered and self._logged == UNREACHABLE:
                self._logged = self._refused
                said = (
                    "Redis reachable again" if self._refused is None else "Redis answers, but refuses writes"
                )
            if access == "write":
                if self._refused is not None:
                    self._refused, self._writes_back_at = None, now
                elif self._logged is not None and now - self._writes_back_at >= WRITES_BACK_QUIET:
                    self._logged, said = None, "Redis takes writes again"
            healthy = self._refused is None
        if said:
            moving = healthy and self._spool is not None
            _log.warning(said + ("; spooled SMS and windows move back to it" if moving else ""))
        if answered and self.persistence is None:
            with contextlib.suppress(Exception):
                self._describe_server()

    def spool(self) -> SQLiteStore:
        with self._spool_lock:
            if self._spool is None:
                self._spool = SQLiteStore(self.spool_path)
            return self._spool

    def _remote(self, call: Callable[[], T], local: Callable[[], T], access: Access = "read") -> T:
        """``call`` on Redis, or ``local`` (the spool, or a neutral answer) when Redis fails.

        A write that succeeds says so itself (:meth:`_succeeded` with "write"): only a
        write tells that Redis takes writes again.
        """
        if not self._may_use(access):
            return local()
        try:
            result = call()
        except (redis.RedisError, OSError) as exc:
            fault = fault_of(exc)
            if fault is None:
                raise
            self._failed(fault, exc)
            return local()
        self._succeeded("read")
        return result

    def _script(self, name: str, keys: list[str], args: Sequence[Any] = ()) -> Any:
        flagged, plain = self._scripts[name]
        if flagged is not None and self._allow_oom is not False:
            try:
                result = flagged(keys=keys, args=list(args))
            except redis.ResponseError as exc:
                if not _no_script_flags(exc):
                    raise
                self._allow_oom = False
                _log.info(
                    "Redis takes no script flags (before 7.0): while it is out of memory, "
                    "the SMS it holds wait until it has room again"
                )
            else:
                self._allow_oom = True
                return result
        return plain(keys=keys, args=list(args))

    def now(self) -> float:
        def remote() -> float:
            seconds, micros = self._client.time()
            return float(seconds) + float(micros) / 1_000_000

        return self._remote(remote, time.time)

    # -- what the server keeps --------------------------------------------------------
    def _describe_server(self) -> None:
        """Say once, at start (or when Redis first answers), what a restart of it would lose."""
        try:
            info: dict[str, Any] = {}
            for section in ("persistence", "memory", "replication"):
                info.update(self._client.info(section))
            config: dict[str, str] = {}
            try:
                for name in ("appendonly", "appendfsync", "save"):
                    config.update(self._client.config_get(name))
            except redis.ResponseError:  # CONFIG renamed or refused (managed Redis): INFO tells AOF
                config = {}
        except (redis.RedisError, OSError):
            return  # said when Redis answers
        line, warn = describe_persistence(info, config)
        self.persistence = line
        (_log.warning if warn else _log.info)(line, store=_masked(self.url))

    # -- transactions -------------------------------------------------------------
    def transact(self, fn: Callable[[Tx], T]) -> T:
        return self._remote(lambda: self._transact_remote(fn), lambda: self.spool().transact(fn), "write")

    def _transact_remote(self, fn: Callable[[Tx], T]) -> T:
        for attempt in range(MAX_CONFLICTS):
            now = self.now() if attempt == 0 else self._server_time()
            with self._client.pipeline() as pipe:
                pipe.watch(self._k("tx"))  # immediate mode from here; nobody writes this key
                tx = Tx(_RedisTx(self, pipe), now)
                result = fn(tx)
                if tx.empty:
                    pipe.unwatch()
                    return result
                pipe.multi()
                self._queue_writes(pipe, tx)
                try:
                    pipe.execute()
                except redis.WatchError:
                    time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                    continue
                self._succeeded("write")
                self._journal_put(tx.new_items)
                return result
        raise RuntimeError(f"Redis transaction gave up after {MAX_CONFLICTS} conflicts")

    def _server_time(self) -> float:
        seconds, micros = self._client.time()
        return float(seconds) + float(micros) / 1_000_000

    def _queue_writes(self, pipe: Any, tx: Tx) -> None:
        values: dict[str, str] = {}
        doomed: list[str] = []
        for table in _INDEXED:
            dirty = getattr(tx, table).dirty
            if not dirty:
                continue
            scores: dict[str, float] = {}
            gone: list[str] = []
            for key, row in dirty.items():
                name = self._k(_ROW_PREFIX[table], key)
                if row is None:
                    doomed.append(name)
                    gone.append(key)
                else:
                    values[name] = _encode_row(table, row)
                    scores[key] = _time_of(table, row)
            if scores:
                pipe.zadd(self._k(table), scores)
            if gone:
                pipe.zrem(self._k(table), *gone)
        if values:
            pipe.mset(values)
        if doomed:
            pipe.delete(*doomed)
        for key, tat in tx.rates.dirty.items():
            name = self._k("r:", key)
            if tat is None:
                pipe.delete(name)
            else:
                ttl = max(1000, int((tat - tx.now) * 1000) + 60_000)
                pipe.set(name, repr(tat), px=ttl)
        if tx.new_items:
            self._queue_outbox_add(pipe, tx.new_items)

    def _queue_bindings(self, pipe: Any, items: Sequence[OutboxItem]) -> None:
        """Record the members of bound requests (claims and trims take them together)."""
        members: dict[str, list[str]] = {}
        for item in items:
            if item.batch_id and item.state is not OutboxState.SENT:
                members.setdefault(item.batch_id, []).append(item.csms_id)
        for batch_id, ids in members.items():
            pipe.sadd(self._k("bm:", batch_id), *ids)
            pipe.expire(self._k("bm:", batch_id), BINDING_TTL)

    def _queue_outbox_add(self, pipe: Any, items: Sequence[OutboxItem]) -> None:
        pipe.hset(self._k("o"), mapping={i.csms_id: _item_json(i) for i in items})
        self._queue_bindings(pipe, items)
        open_items = {i.csms_id: i.next_attempt_at for i in items if i.state is not OutboxState.DEAD}
        dead = {i.csms_id: i.next_attempt_at for i in items if i.state is OutboxState.DEAD}
        if open_items:
            pipe.zadd(self._k("due"), open_items)
        if dead:
            pipe.zadd(self._k("dead"), dead)

    def timer_stores(self) -> list[Any]:
        """Stores whose windows, digests and groups need sweeping: Redis, and the spool if any."""
        return [self] if self._spool is None else [self, self._spool]

    def next_due(self) -> float | None:
        def remote() -> float | None:
            pipe = self._client.pipeline(transaction=False)
            for table in _INDEXED:
                pipe.zrange(self._k(table), 0, 0, withscores=True)
            firsts = [r[0][1] for r in pipe.execute() if r]
            return min(firsts, default=None)

        times = [self._remote(remote, lambda: None)]
        if self._spool is not None:
            times.append(self._spool.next_due())
        return min((t for t in times if t is not None), default=None)

    def window_count(self) -> int:
        count = self._remote(lambda: int(self._client.zcard(self._k("windows"))), lambda: 0)
        return count + (self._spool.window_count() if self._spool is not None else 0)

    # -- rate limits ----------------------------------------------------------------
    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        def remote() -> float:
            return float(self._script("rate", [self._k("r:", key)], [rate, burst, "1" if reserve else "0"]))

        return self._remote(
            remote, lambda: self.spool().rate_acquire(key, rate, burst, reserve=reserve), "drain"
        )

    # -- the journal: SMS this process wrote to Redis or claimed there ------------------
    def _journal_put(self, items: Sequence[OutboxItem]) -> None:
        """Remember open SMS (their latest shape); forget settled ones (sent or dead)."""
        if not items:
            return
        now = time.monotonic()
        with self._journal_lock:
            journal = self._journal
            for item in items:
                if item.state in (OutboxState.SENT, OutboxState.DEAD):
                    journal.pop(item.csms_id, None)
                    continue
                known = journal.get(item.csms_id)
                journal[item.csms_id] = (known[0] if known is not None else now, item)
            while len(journal) > JOURNAL_MAX:
                journal.popitem(last=False)
                self._counts["journal_dropped"] += 1

    def _journal_drop(self, csms_ids: Sequence[str]) -> None:
        with self._journal_lock:
            for csms_id in csms_ids:
                self._journal.pop(csms_id, None)

    def _journal_items(self, *, maybe_sent: bool = False) -> list[OutboxItem]:
        """What the journal holds, once entries older than :data:`JOURNAL_AGE` are forgotten.

        ``maybe_sent``: mark them so in the journal too, at once (Redis lost them: they
        go back as "may have reached the gateway").
        """
        oldest = time.monotonic() - JOURNAL_AGE
        with self._journal_lock:
            journal = self._journal
            while journal:
                csms_id, (born, _) = next(iter(journal.items()))
                if born >= oldest:
                    break
                del journal[csms_id]
            if maybe_sent:
                for csms_id, (born, item) in list(journal.items()):
                    journal[csms_id] = (born, item.evolve(maybe_sent=True))
            return [item for _, item in journal.values()]

    def counters(self) -> dict[str, int]:
        """What this store did about Redis faults, for metrics.

        ``data_lost``: times it noticed Redis had lost data (restart without persistence,
        an older snapshot, a failover to a lagging replica); ``readded``: SMS it re-added
        then; ``journal_dropped``: SMS it could not have re-added (the journal was full);
        ``rows_moved``: windows, digests, group buffers and caps moved back from the spool.
        """
        with self._journal_lock:
            return {**self._counts, "journal": len(self._journal)}

    # -- noticing that Redis lost its data --------------------------------------------
    def _check_marker(self) -> int:
        """Has Redis lost data since the last check? If so, re-add what this process knows.

        The marker is a hash: a token set when it is missing, and a counter every check
        increments. A token that changed, or a counter that did not grow, means Redis
        lost what it had (or went back to an older snapshot). The same script call says
        which journal SMS Redis no longer has: while no loss is noticed, those were
        settled by someone (sent or given up on) and leave the journal.
        """
        with self._marker_lock:
            if not self._may_use("drain"):
                return 0
            items = self._journal_items()
            ids = [i.csms_id for i in items]
            chunks = [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)] or [[]]
            proposed = secrets.token_hex(8)
            lost, settled = False, []
            try:
                for chunk in chunks:
                    token, count, flags = self._script(
                        "epoch", [self._k("epoch"), self._k("o"), self._k("dead")], [proposed, *chunk]
                    )
                    count = int(count)
                    if self._token is not None and (token != self._token or count <= self._epoch):
                        lost = True
                    self._token, self._epoch = token, count
                    if not lost:
                        settled += [i for i, flag in zip(chunk, flags, strict=True) if flag != "1"]
            except (redis.RedisError, OSError) as exc:
                fault = fault_of(exc)
                if fault is None:
                    raise
                self._failed(fault, exc)
                return 0 if fault == UNREACHABLE else self._check_marker_read_only()
            self._succeeded("read")
            self._journal_drop(settled)
            return self._recover() if lost else 0

    def _check_marker_read_only(self) -> int:
        """Redis refuses writes (a replica now, say): the marker can still be read.

        A token that changed, or a counter below the last one seen, means this server
        does not have all that was written (a failover to a replica that lagged): what
        this process knows is pending and the server lacks goes to the spool.
        """
        try:
            token, count = self._client.hmget(self._k("epoch"), ["token", "n"])
        except (redis.RedisError, OSError):
            return 0
        lost = self._token is not None and (token != self._token or int(count or 0) < self._epoch)
        self._token, self._epoch = token, int(count or 0)
        return self._recover() if lost else 0

    def _recover(self) -> int:
        """Redis lost data: the SMS this process knows are pending go back, as maybe sent."""
        known = self._journal_items(maybe_sent=True)
        added = self._readd(known)  # what goes to the spool instead leaves the journal
        with self._journal_lock:  # together: whoever reads the loss reads what was done about it
            self._counts["data_lost"] += 1
            self._counts["readded"] += added
        _log.error(
            "Redis lost its data: restarted without persistence? The SMS this process knew were "
            "pending are re-added under their csms_id (the gateway keeps them once); dedup windows, "
            "caps, digests and group buffers Redis held are gone, and so are SMS only a process "
            "that is not running knew of",
            readded=added,
            known=len(known),
            store=_masked(self.url),
            persistence=self.persistence or "unknown",
        )
        return added

    def _readd(self, items: Sequence[OutboxItem]) -> int:
        added = 0
        for start in range(0, len(items), _CHUNK // 5):
            chunk = items[start : start + _CHUNK // 5]
            args: list[Any] = [self._k("bm:"), BINDING_TTL]
            for item in chunk:
                leased = item.state is OutboxState.INFLIGHT
                args += [
                    item.csms_id,
                    _item_json(item),
                    repr(item.next_attempt_at),
                    repr(item.next_attempt_at) if leased else "",
                    item.batch_id or "",
                ]

            def remote(args: list[Any] = args) -> int:
                keys = [self._k("o"), self._k("due"), self._k("claimed"), self._k("dead")]
                count = int(self._script("readd", keys, args))
                self._succeeded("write")
                return count

            def local(chunk: Sequence[OutboxItem] = chunk) -> int:
                return self._readd_to_spool(chunk)

            added += self._remote(remote, local, "write")
        return added

    def _readd_to_spool(self, items: Sequence[OutboxItem]) -> int:
        """Redis refuses writes: the SMS it does not have go to the spool (durable on this host)."""
        present = self._remote(lambda: self._remote_get([i.csms_id for i in items]), lambda: {})
        missing = [i.evolve(state=OutboxState.PENDING) for i in items if i.csms_id not in present]
        if missing:
            self.spool().outbox_add(missing)
            self._journal_drop([i.csms_id for i in missing])  # the spool keeps them now
        return len(missing)

    # -- outbox ---------------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        if not items:
            return

        def remote() -> None:
            pipe = self._client.pipeline()
            self._queue_outbox_add(pipe, items)
            pipe.execute()
            self._succeeded("write")
            self._journal_put(items)

        self._remote(remote, lambda: self.spool().outbox_add(items), "write")

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        # One source a call, taking turns: a request is never planned from SMS of both (the
        # members of a bound request must live in one store), and neither starves the other.
        self._claim_turn = not self._claim_turn
        sources = (self._claim_spool, self._claim_redis)
        for source in sources if self._claim_turn else sources[::-1]:
            items = source(limit, lease)
            if items:
                return items
        return []

    def _claim_redis(self, limit: int, lease: float) -> list[OutboxItem]:
        def remote() -> list[OutboxItem]:
            ids, raws, taken_over, until = self._script(
                "claim", [self._k("due"), self._k("o"), self._k("claimed")], [limit, lease, self._k("bm:")]
            )
            items = []
            for csms_id, raw, flag in zip(ids, raws, taken_over, strict=True):
                item = _item_from(csms_id, raw, float(until), claimed=True)
                if flag == "1" and not item.maybe_sent:  # its owner died mid-request: it may be sent
                    item = item.evolve(maybe_sent=True)
                items.append(item)
            self._journal_put(items)
            return items

        return self._remote(remote, list, "drain")

    def _claim_spool(self, limit: int, lease: float) -> list[OutboxItem]:
        if self._spool is None or not self._spool.outbox_open():  # a read, not a write transaction
            return []
        items = self._spool.outbox_claim(limit, lease)
        self._spool_claims.update(i.csms_id for i in items)
        return items

    def _split(self, csms_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        local = [i for i in csms_ids if i in self._spool_claims]
        return local, [i for i in csms_ids if i not in self._spool_claims]

    def outbox_renew(self, csms_ids: Sequence[str], lease: float) -> None:
        local, shared = self._split(csms_ids)
        if local and self._spool is not None:
            self._spool.outbox_renew(local, lease)
        if shared:
            self._remote(
                lambda: self._script("renew", [self._k("due"), self._k("claimed")], [lease, *shared]),
                lambda: None,
                "drain",
            )

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        local = [i for i in items if i.csms_id in self._spool_claims]
        shared = [i for i in items if i.csms_id not in self._spool_claims]
        if local:
            self.spool().outbox_update(local)
            done = [i.csms_id for i in local if i.state is not OutboxState.INFLIGHT]
            self._spool_claims.difference_update(done)
        if not shared:
            return
        # Whatever Redis takes, this process knows the outcome: a settled SMS leaves the
        # journal, an open one is remembered in its new shape (its binding, say).
        self._journal_put(shared)
        args: list[Any] = [self._k("bm:"), BINDING_TTL]
        for item in shared:
            sent = item.state is OutboxState.SENT
            args += [
                item.csms_id,
                item.state.value,
                "" if sent else _item_json(item),
                repr(item.next_attempt_at),
                "" if sent else item.batch_id or "",
            ]
        # An outcome Redis did not take is not lost: the lease runs out, the SMS is
        # sent again with the same csms_id, and the gateway's duplicate check answers.
        self._remote(
            lambda: self._script(
                "update", [self._k("o"), self._k("due"), self._k("dead"), self._k("claimed")], args
            ),
            lambda: None,
            "drain",
        )

    def _remote_get(self, csms_ids: list[str]) -> dict[str, OutboxItem]:
        if not csms_ids:
            return {}
        pipe = self._client.pipeline(transaction=False)
        pipe.hmget(self._k("o"), csms_ids)
        pipe.zmscore(self._k("due"), csms_ids)
        pipe.hmget(self._k("claimed"), csms_ids)
        raws, scores, claims = pipe.execute()
        found = {}
        for csms_id, raw, score, claim in zip(csms_ids, raws, scores, claims, strict=True):
            if raw is not None:
                found[csms_id] = _item_from(csms_id, raw, score, claimed=claim is not None)
        return found

    def outbox_get(self, csms_ids: Sequence[str]) -> dict[str, OutboxItem]:
        found = self._spool.outbox_get(csms_ids) if self._spool is not None else {}
        missing = [i for i in csms_ids if i not in found]
        remote = self._remote(lambda: self._remote_get(missing), lambda: {})
        return {**found, **remote}

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]:
        def remote() -> list[OutboxItem]:
            ids: list[str] = []
            if state in (None, OutboxState.PENDING, OutboxState.INFLIGHT):
                ids += list(self._client.zrange(self._k("due"), 0, limit - 1))
            if state in (None, OutboxState.DEAD):
                ids += list(self._client.zrange(self._k("dead"), 0, limit - 1))
            return list(self._remote_get(ids).values())

        items = self._spool.outbox_list(state, limit) if self._spool is not None else []
        items += self._remote(remote, list)
        items = [i for i in items if state is None or i.state is state]
        return sorted(items, key=lambda i: i.created_at)[:limit]

    def outbox_counts(self) -> OutboxCounts:
        def remote() -> OutboxCounts:
            pipe = self._client.pipeline(transaction=False)
            pipe.zcard(self._k("due"))
            pipe.hlen(self._k("claimed"))
            pipe.zcard(self._k("dead"))
            pending, inflight, dead = pipe.execute()
            return OutboxCounts(pending=pending, inflight=min(inflight, pending), dead=dead)

        counts = self._remote(remote, OutboxCounts)
        if self._spool is not None:
            local = self._spool.outbox_counts()
            counts = OutboxCounts(
                counts.pending + local.pending, counts.inflight + local.inflight, counts.dead + local.dead
            )
        return counts

    def outbox_open(self) -> int:
        remote = self._remote(lambda: int(self._client.zcard(self._k("due"))), lambda: 0)
        return remote + (self._spool.outbox_open() if self._spool is not None else 0)

    def outbox_next_due(self) -> float | None:
        def remote() -> float | None:
            first = self._client.zrange(self._k("due"), 0, 0, withscores=True)
            return float(first[0][1]) if first else None

        times = [self._remote(remote, lambda: None)]
        if self._spool is not None:
            times.append(self._spool.outbox_next_due())
        return min((t for t in times if t is not None), default=None)

    def outbox_trim(self, max_open: int, reason: str) -> list[OutboxItem]:
        def remote() -> list[OutboxItem]:
            flat = self._script(
                "trim",
                [self._k("due"), self._k("o"), self._k("claimed"), self._k("dead")],
                [max_open, reason, self._k("bm:")],
            )
            return [_item_from(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

        dropped: list[OutboxItem] = self._remote(remote, list, "drain")
        self._journal_drop([i.csms_id for i in dropped])
        if self._spool is not None:
            dropped += self._spool.outbox_trim(max_open, reason)
        return dropped

    def outbox_expire_dead(self, older_than: float) -> int:
        count = self._remote(
            lambda: int(self._script("expire", [self._k("o"), self._k("dead")], [repr(older_than)])),
            lambda: 0,
            "drain",
        )
        if self._spool is not None:
            count += self._spool.outbox_expire_dead(older_than)
        return count

    def outbox_requeue(self, csms_ids: Sequence[str]) -> int:
        count = self._spool.outbox_requeue(csms_ids) if self._spool is not None else 0

        def remote() -> int:
            now = self._server_time()
            dead = {
                i.csms_id: i for i in self._remote_get(list(csms_ids)).values() if i.state is OutboxState.DEAD
            }
            for batch_id in {i.batch_id for i in dead.values() if i.batch_id}:  # a bound request whole
                members = list(self._client.smembers(self._k("bm:", batch_id)))
                for item in self._remote_get(members).values():
                    if item.state is OutboxState.DEAD and item.batch_id == batch_id:
                        dead[item.csms_id] = item
            if dead:
                pipe = self._client.pipeline()
                revived = [i.evolve(state=OutboxState.PENDING, next_attempt_at=now) for i in dead.values()]
                pipe.hset(self._k("o"), mapping={i.csms_id: _item_json(i) for i in revived})
                pipe.zrem(self._k("dead"), *[i.csms_id for i in revived])
                pipe.zadd(self._k("due"), {i.csms_id: now for i in revived})
                pipe.execute()
                self._succeeded("write")
                self._journal_put(revived)
            return len(dead)

        return count + self._remote(remote, lambda: 0, "write")

    def outbox_resume(self) -> int:
        count = self._spool.outbox_resume() if self._spool is not None else 0
        remote = self._remote(
            lambda: int(self._script("resume", [self._k("due"), self._k("claimed")])), lambda: 0, "drain"
        )
        return count + remote

    def outbox_purge(self, state: OutboxState) -> int:
        count = self._spool.outbox_purge(state) if self._spool is not None else 0

        def remote() -> int:
            zset = self._k("dead") if state is OutboxState.DEAD else self._k("due")
            ids = list(self._client.zrange(zset, 0, -1))
            if state is OutboxState.PENDING:
                claimed = set(self._client.hkeys(self._k("claimed")))
                ids = [i for i in ids if i not in claimed]
            if not ids:
                return 0
            pipe = self._client.pipeline()
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                pipe.hdel(self._k("o"), *chunk)
                pipe.zrem(zset, *chunk)
            pipe.execute()
            self._succeeded("write")
            self._journal_drop(ids)
            return len(ids)

        return count + self._remote(remote, lambda: 0, "write")

    def health(self) -> StoreHealth:
        """``durable`` while Redis takes writes; ``spooling`` (and why) while it fails."""
        fault = self.fault
        if fault is None:
            return StoreHealth("durable")
        return StoreHealth("spooling", f"{_WHAT_HAPPENED[fault]}; writes go to the spool {self.spool_path}")

    # -- moving the spool back ----------------------------------------------------
    def move_spool(self, limit: int = 500) -> int:
        """:meth:`maintain` by the name the Notifier calls (kept until it calls ``maintain``)."""
        return self.maintain(limit)

    def maintain(self, limit: int = 500) -> int:
        """The Notifier's housekeeping, once a second: did Redis lose data; can the spool move back?

        Returns how many SMS became due in Redis: re-added after a loss, or moved from
        the spool (same csms_id). Windows, digests, group buffers and caps opened in the
        spool move too, merged with Redis's (see :func:`merge_window`).
        """
        readded = self._check_marker()
        if self._spool is None or not self._may_use("write"):
            return readded
        try:
            self._move_rows()
        except (redis.RedisError, OSError) as exc:
            fault = fault_of(exc)
            if fault is None:
                raise
            self._failed(fault, exc)
            return readded
        return readded + self._move_items(limit)

    def _move_items(self, limit: int) -> int:
        spool = self.spool()
        # Claimed first, so our own dispatcher does not send them meanwhile; deleted
        # from the spool only once Redis has them. A crash in between leaves a copy in
        # both, which is harmless: the same csms_id is delivered once.
        items = spool.outbox_claim(limit, 30.0)
        items = [i for i in items if i.csms_id not in self._spool_claims]
        if not items:
            return 0
        pending = [i.evolve(state=OutboxState.PENDING, next_attempt_at=spool.now()) for i in items]
        try:
            pipe = self._client.pipeline()
            self._queue_outbox_add(pipe, pending)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            spool.outbox_update([i.evolve(state=OutboxState.PENDING) for i in items])
            fault = fault_of(exc)
            if fault is None:
                raise
            self._failed(fault, exc)
            return 0
        self._succeeded("write")
        self._journal_put(pending)
        spool.outbox_update([i.evolve(state=OutboxState.SENT) for i in items])
        _log.info("spooled SMS moved to Redis", count=len(items))
        return len(items)

    def _move_rows(self) -> int:
        """Windows, digests, group buffers and caps opened in the spool, merged into Redis's.

        In one spool transaction (the host's other processes wait for it): read a slice
        of rows, merge them into Redis in one Redis transaction, then delete them from the
        spool. Should Redis fail, the spool's transaction is rolled back and keeps them.
        """
        spool = self.spool()

        def move(local: Tx) -> int:
            keys = {t: local.earliest(t, MOVE_ROWS) for t in ("windows", "digests", "groups", "lifecycles")}
            rate_keys = spool.rate_keys(MOVE_ROWS)
            if not (rate_keys or any(keys.values())):
                return 0
            local.windows.load(keys["windows"])
            local.digests.load(keys["digests"])
            local.groups.load(keys["groups"])
            local.lifecycles.load(keys["lifecycles"])
            local.rates.load(rate_keys)
            windows = {k: w for k in keys["windows"] if (w := local.windows.get(k)) is not None}
            digests = {k: d for k in keys["digests"] if (d := local.digests.get(k)) is not None}
            groups = {k: g for k in keys["groups"] if (g := local.groups.get(k)) is not None}
            lifecycles = {k: c for k in keys["lifecycles"] if (c := local.lifecycles.get(k)) is not None}
            rates = {k: r for k in rate_keys if (r := local.rates.get(k)) is not None}

            def merge(tx: Tx) -> None:
                tx.windows.load(windows)
                tx.digests.load(digests)
                tx.groups.load(groups)
                tx.lifecycles.load(lifecycles)
                tx.rates.load(rates)
                for key, lifecycle in lifecycles.items():
                    # paged on either side is paged; resolved on either side is resolved
                    tx.lifecycles.put(key, merge_lifecycle(tx.lifecycles.get(key), lifecycle))
                for key, window in windows.items():
                    merged = merge_window(tx.windows.get(key), window, tx.now)
                    if merged is not None:
                        tx.windows.put(key, merged)
                for key, digest in digests.items():
                    tx.digests.put(key, merge_digest(tx.digests.get(key), digest, DIGEST_KEEP))
                for key, group in groups.items():
                    tx.groups.put(key, merge_group(tx.groups.get(key), group, GROUP_KEEP))
                for key, tat in rates.items():
                    meter = merge_rate(tx.rates.get(key), tat, tx.now)
                    if meter is not None:
                        tx.rates.put(key, meter)

            self._transact_remote(merge)
            for key in windows:
                local.windows.delete(key)
            for key in digests:
                local.digests.delete(key)
            for key in groups:
                local.groups.delete(key)
            for key in lifecycles:
                local.lifecycles.delete(key)
            for key in rates:
                local.rates.delete(key)
            return len(windows) + len(digests) + len(groups) + len(lifecycles) + len(rates)

        moved = spool.transact(move)
        if moved:
            with self._journal_lock:
                self._counts["rows_moved"] += moved
            _log.info("spooled windows, digests, group buffers and caps merged into Redis", count=moved)
        return moved

    # -- lifecycle -------------------------------------------------------------------
    def check(self) -> None:
        try:
            self._client.ping()
        except _DOWN as exc:
            raise StoreUnavailableError(f"store {_masked(self.url)} is unreachable: {exc}") from None
        except redis.RedisError as exc:
            raise StoreUnavailableError(f"store {_masked(self.url)}: {exc}") from None

    def close(self) -> None:
        self._client.close()
        if self._spool is not None:
            self._spool.close()

    def after_fork(self) -> None:
        # redis-py's pool notices the new pid and reconnects by itself. Our own locks may
        # have been held by a thread of the parent; the parent's spool claims and journal
        # are its own (the parent re-adds its SMS should Redis lose them); the spool
        # (SQLite) opens a connection of its own on first use.
        self._journal = OrderedDict()
        self._journal_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._marker_lock = threading.Lock()
        self._spool_lock = threading.Lock()
        self._spool_claims = set()
        if self._spool is not None:
            self._spool.after_fork()
