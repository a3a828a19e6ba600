"""Redis store: dedup windows, caps, pacing and the outbox shared by many processes and hosts.

Transactions ``WATCH`` every row they read and commit with ``MULTI``/``EXEC``;
a conflict with another process reruns the transaction. Times come from the
server (``TIME``), so hosts with drifting clocks agree on windows and rates.
Commands carry many members each (one ``HSET`` for a whole batch of SMS, one
``ZADD`` for their due times), so a round costs a few round trips, not a few
per SMS.

When Redis cannot be reached, nothing is silently downgraded to memory: the
store falls back to a **spool**, a SQLite file on this host (one per Redis
URL, shared by the host's processes), logs that once, and tries Redis again
every few seconds. While Redis is down, dedup and caps hold per host, not
across hosts (a repeat may page once more). When Redis is back, spooled SMS
move there, keeping their csms_id, so none is lost or sent twice.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .._log import get_logger
from ..paths import state_dir
from ..validation import mask_credentials
from .base import (
    Digest,
    GroupBuffer,
    IndexedTable,
    OutboxCounts,
    OutboxItem,
    OutboxState,
    StoreUnavailableError,
    TableName,
    Tx,
    Window,
)
from .sqlite import SQLiteStore

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("the Redis store needs: pip install 'sslsms-notify[redis]'") from exc

_log = get_logger("sslsms_notify.stores.redis")
T = TypeVar("T")
RETRY_REDIS_AFTER = 3.0
MAX_CONFLICTS = 100
_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)

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
    if table == "windows":
        return Window(key, f[0], f[1], f[2], f[3], f[4], tuple(f[5]))
    if table == "digests":
        return Digest(key, f[0], f[1], tuple(f[2]), f[3])
    return GroupBuffer(key, f[0], f[1], tuple(f[2]), tuple(f[3]))


def _time_of(table: str, row: Any) -> float:
    return float(row.end_at if table == "windows" else row.ready_at if table == "digests" else row.deadline)


_ROW_PREFIX = {"windows": "w:", "rates": "r:", "digests": "dg:", "groups": "g:"}


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


class RedisStore:
    """The :class:`~.base.Store` on a Redis server (``store="redis://host:6379/0"``).

    Durable, and shared by every process on every host; times come from the server.
    ``prefix`` starts every key; ``spool`` is the SQLite file used while Redis is
    unreachable (default: one per URL in the state directory).
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
        self._scripts = {
            name: self._client.register_script(body)
            for name, body in (
                ("rate", _RATE),
                ("claim", _CLAIM),
                ("renew", _RENEW),
                ("trim", _TRIM),
                ("resume", _RESUME),
            )
        }
        self.spool_path = Path(spool).expanduser() if spool is not None else default_spool_path(url)
        self._spool: SQLiteStore | None = None
        if self.spool_path.exists():  # left by an earlier process while Redis was down
            self._spool = SQLiteStore(self.spool_path)
        self._spool_lock = threading.Lock()
        self._spool_claims: set[str] = set()
        self._down_since: float | None = None
        self._warned = False
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
            pass  # not reachable now: the spool takes over until it is

    def __repr__(self) -> str:
        return f"RedisStore({_masked(self.url)!r})"

    def _k(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    # -- reachability and the spool ---------------------------------------------
    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    def _reachable(self) -> bool:
        return self._down_since is None or time.monotonic() - self._down_since >= RETRY_REDIS_AFTER

    def _went_down(self, exc: BaseException) -> None:
        if not self._warned:
            refused = isinstance(exc, redis.AuthenticationError)
            _log.error(
                ("Redis refused our credentials" if refused else "Redis unreachable")
                + "; SMS go to a local spool until it answers (dedup and caps hold per host meanwhile)",
                spool=str(self.spool_path),
                error=str(exc),
            )
            self._warned = True
        self._down_since = time.monotonic()

    def _came_back(self) -> None:
        if self._down_since is not None:
            _log.warning("Redis reachable again; shared state resumed")
            self._down_since = None
            self._warned = False

    def spool(self) -> SQLiteStore:
        with self._spool_lock:
            if self._spool is None:
                self._spool = SQLiteStore(self.spool_path)
            return self._spool

    def _remote(self, call: Callable[[], T], local: Callable[[], T]) -> T:
        """``call`` on Redis, or ``local`` (the spool, or a neutral answer) when it is down."""
        if not self._reachable():
            return local()
        try:
            result = call()
        except _DOWN as exc:
            self._went_down(exc)
            return local()
        self._came_back()
        return result

    def now(self) -> float:
        def remote() -> float:
            seconds, micros = self._client.time()
            return float(seconds) + float(micros) / 1_000_000

        return self._remote(remote, time.time)

    # -- transactions -------------------------------------------------------------
    def transact(self, fn: Callable[[Tx], T]) -> T:
        return self._remote(lambda: self._transact_remote(fn), lambda: self.spool().transact(fn))

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
                return result
        raise RuntimeError(f"Redis transaction gave up after {MAX_CONFLICTS} conflicts")

    def _server_time(self) -> float:
        seconds, micros = self._client.time()
        return float(seconds) + float(micros) / 1_000_000

    def _queue_writes(self, pipe: Any, tx: Tx) -> None:
        values: dict[str, str] = {}
        doomed: list[str] = []
        for table in ("windows", "digests", "groups"):
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
            for table in ("windows", "digests", "groups"):
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
            return float(
                self._scripts["rate"](keys=[self._k("r:", key)], args=[rate, burst, "1" if reserve else "0"])
            )

        return self._remote(remote, lambda: self.spool().rate_acquire(key, rate, burst, reserve=reserve))

    # -- outbox ---------------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        if not items:
            return

        def remote() -> None:
            pipe = self._client.pipeline()
            self._queue_outbox_add(pipe, items)
            pipe.execute()

        self._remote(remote, lambda: self.spool().outbox_add(items))

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        if not self._reachable():
            return self._claim_spool(limit, lease)

        def remote() -> list[OutboxItem]:
            ids, raws, taken_over, until = self._scripts["claim"](
                keys=[self._k("due"), self._k("o"), self._k("claimed")], args=[limit, lease, self._k("bm:")]
            )
            items = []
            for csms_id, raw, flag in zip(ids, raws, taken_over, strict=True):
                item = _item_from(csms_id, raw, float(until), claimed=True)
                if flag == "1" and not item.maybe_sent:  # its owner died mid-request: it may be sent
                    item = item.evolve(maybe_sent=True)
                items.append(item)
            return items

        return self._remote(remote, lambda: self._claim_spool(limit, lease))

    def _claim_spool(self, limit: int, lease: float) -> list[OutboxItem]:
        if self._spool is None:
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
                lambda: self._scripts["renew"](
                    keys=[self._k("due"), self._k("claimed")], args=[lease, *shared]
                ),
                lambda: None,
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

        def remote() -> None:
            pipe = self._client.pipeline()
            sent = [i.csms_id for i in shared if i.state is OutboxState.SENT]
            kept = {i.csms_id: _item_json(i) for i in shared if i.state is not OutboxState.SENT}
            open_items = {
                i.csms_id: i.next_attempt_at
                for i in shared
                if i.state in (OutboxState.PENDING, OutboxState.INFLIGHT)
            }
            dead = {i.csms_id: i.next_attempt_at for i in shared if i.state is OutboxState.DEAD}
            released = [i.csms_id for i in shared if i.state is not OutboxState.INFLIGHT]
            if sent:
                pipe.hdel(self._k("o"), *sent)
            if kept:
                pipe.hset(self._k("o"), mapping=kept)
                self._queue_bindings(pipe, shared)
            if open_items:
                pipe.zadd(self._k("due"), open_items)
                pipe.zrem(self._k("dead"), *open_items)
            if dead or sent:
                pipe.zrem(self._k("due"), *(list(dead) + sent))
            if dead:
                pipe.zadd(self._k("dead"), dead)
            if sent:
                pipe.zrem(self._k("dead"), *sent)
            if released:
                pipe.hdel(self._k("claimed"), *released)
            pipe.execute()

        # An outcome Redis did not take is not lost: the lease runs out, the SMS is
        # sent again with the same csms_id, and the gateway's duplicate check answers.
        self._remote(remote, lambda: None)

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
            flat = self._scripts["trim"](
                keys=[self._k("due"), self._k("o"), self._k("claimed"), self._k("dead")],
                args=[max_open, reason, self._k("bm:")],
            )
            return [_item_from(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

        dropped: list[OutboxItem] = self._remote(remote, list)
        if self._spool is not None:
            dropped += self._spool.outbox_trim(max_open, reason)
        return dropped

    def outbox_expire_dead(self, older_than: float) -> int:
        def remote() -> int:
            ids = self._client.zrangebyscore(self._k("dead"), "-inf", f"({older_than}")
            if not ids:
                return 0
            pipe = self._client.pipeline()
            pipe.hdel(self._k("o"), *ids)
            pipe.zrem(self._k("dead"), *ids)
            pipe.execute()
            return len(ids)

        count = self._remote(remote, lambda: 0)
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
            return len(dead)

        return count + self._remote(remote, lambda: 0)

    def outbox_resume(self) -> int:
        count = self._spool.outbox_resume() if self._spool is not None else 0
        remote = self._remote(
            lambda: int(self._scripts["resume"](keys=[self._k("due"), self._k("claimed")])), lambda: 0
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
            return len(ids)

        return count + self._remote(remote, lambda: 0)

    # -- moving the spool back ----------------------------------------------------
    def move_spool(self, limit: int = 500) -> int:
        """Move due spooled SMS to Redis (same csms_id); returns how many moved."""
        if self._spool is None or not self._reachable():
            return 0
        # Claimed first, so our own dispatcher does not send them meanwhile; deleted
        # from the spool only once Redis has them. A crash in between leaves a copy in
        # both, which is harmless: the same csms_id is delivered once.
        items = self._spool.outbox_claim(limit, 30.0)
        items = [i for i in items if i.csms_id not in self._spool_claims]
        if not items:
            return 0
        pending = [i.evolve(state=OutboxState.PENDING, next_attempt_at=self._spool.now()) for i in items]
        try:
            pipe = self._client.pipeline()
            self._queue_outbox_add(pipe, pending)
            pipe.execute()
        except _DOWN as exc:
            self._went_down(exc)
            self._spool.outbox_update([i.evolve(state=OutboxState.PENDING) for i in items])
            return 0
        self._spool.outbox_update([i.evolve(state=OutboxState.SENT) for i in items])
        _log.info("spooled SMS moved to Redis", count=len(items))
        return len(items)

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
        # redis-py's pool notices the new pid and reconnects by itself. Our own lock may
        # have been held by a thread of the parent; the parent's spool claims are its
        # own; the spool (SQLite) opens a connection of its own on first use.
        self._spool_lock = threading.Lock()
        self._spool_claims = set()
        if self._spool is not None:
            self._spool.after_fork()
