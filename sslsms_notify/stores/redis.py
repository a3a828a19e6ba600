"""Redis store: dedup windows, rate limits and the outbox shared by many processes and hosts.

Every read-modify-write is one Lua script, and every script reads the time
from Redis (``TIME``), so hosts with drifting clocks agree on windows and the
global TPS cap holds across them. When Redis cannot be reached the store falls
back to a local memory store (at-least-once: a repeat may page again, nothing
is silenced), logs that once, and tries Redis again every few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._log import get_logger
from .base import ClosedWindow, DedupHit, OutboxCounts, OutboxItem, OutboxState
from .memory import MemoryStore

try:
    import redis
except ImportError as exc:  # pragma: no cover - depends on the extra
    raise ImportError("the Redis store needs: pip install 'sslsms-notify[redis]'") from exc

_log = get_logger("sslsms_notify.stores.redis")
T = TypeVar("T")
RETRY_REDIS_AFTER = 5.0

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "

_DEDUP_HIT = (
    _NOW
    + """
local h = KEYS[1]
local ends = tonumber(redis.call('HGET', h, 'end'))
local sup = tonumber(redis.call('HGET', h, 'suppressed') or '0')
local count = tonumber(ARGV[4])
if (not ends) or (ends <= now and sup == 0) then
  local new_end = now + tonumber(ARGV[2])
  redis.call('HSET', h, 'end', new_end, 'suppressed', count - 1, 'last_at', now, 'last_text', ARGV[3])
  redis.call('ZADD', KEYS[2], new_end, ARGV[1])
  return {1, count - 1}
end
redis.call('HSET', h, 'suppressed', sup + count, 'last_at', now, 'last_text', ARGV[3])
return {0, sup + count}
"""
)

_DEDUP_CLOSE = (
    _NOW
    + """
local prefix = ARGV[1]
local interval = tonumber(ARGV[2])
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, k in ipairs(keys) do
  local h = prefix .. k
  local sup = tonumber(redis.call('HGET', h, 'suppressed') or '0')
  if sup == 0 then
    redis.call('DEL', h)
    redis.call('ZREM', KEYS[1], k)
  else
    local v = redis.call('HMGET', h, 'last_at', 'last_text')
    table.insert(out, {k, sup, v[1], v[2]})
    redis.call('HSET', h, 'end', now + interval, 'suppressed', 0, 'last_at', now)
    redis.call('ZADD', KEYS[1], now + interval, k)
  end
end
return out
"""
)

_RATE = (
    _NOW
    + """
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
)

_CLAIM = (
    _NOW
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
local until_at = now + tonumber(ARGV[3])
for _, id in ipairs(ids) do
  local h = ARGV[1] .. id
  if redis.call('EXISTS', h) == 1 then
    redis.call('HSET', h, 'state', 'inflight', 'next_attempt_at', until_at)
    redis.call('ZADD', KEYS[1], until_at, id)
    table.insert(out, redis.call('HGETALL', h))
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""
)

_DIGEST_TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return items
"""

_OUTBOX_FIELDS = (
    "msisdn",
    "text",
    "created_at",
    "next_attempt_at",
    "attempts",
    "state",
    "batch_id",
    "last_error",
    "maybe_sent",
)


def _to_item(csms_id: str, raw: dict[str, str]) -> OutboxItem:
    return OutboxItem(
        csms_id=csms_id,
        msisdn=raw["msisdn"],
        text=raw["text"],
        created_at=float(raw["created_at"]),
        next_attempt_at=float(raw["next_attempt_at"]),
        attempts=int(raw["attempts"]),
        state=OutboxState(raw["state"]),
        batch_id=raw.get("batch_id") or None,
        last_error=raw.get("last_error", ""),
        maybe_sent=raw.get("maybe_sent") == "1",
    )


def _to_hash(item: OutboxItem) -> dict[str, Any]:
    return {
        "csms_id": item.csms_id,
        "msisdn": item.msisdn,
        "text": item.text,
        "created_at": repr(item.created_at),
        "next_attempt_at": repr(item.next_attempt_at),
        "attempts": item.attempts,
        "state": item.state.value,
        "batch_id": item.batch_id or "",
        "last_error": item.last_error,
        "maybe_sent": int(item.maybe_sent),
    }


class RedisStore:
    durable = True

    def __init__(self, url: str, *, prefix: str = "sslsms:", socket_timeout: float = 2.0) -> None:
        self.url = url
        self.prefix = prefix
        self._client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=30,
        )
        self._scripts = {
            name: self._client.register_script(body)
            for name, body in (
                ("hit", _DEDUP_HIT),
                ("close", _DEDUP_CLOSE),
                ("rate", _RATE),
                ("claim", _CLAIM),
                ("digest_take", _DIGEST_TAKE),
            )
        }
        self._local = MemoryStore()
        self._local_ids: set[str] = set()
        self._down_since: float | None = None
        self._warned = False

    def __repr__(self) -> str:
        safe = self.url.split("@")[-1]  # never print a password
        return f"RedisStore({safe!r})"

    # -- the fallback ---------------------------------------------------------
    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    def _call(self, remote: Callable[[], T], local: Callable[[], T]) -> T:
        if self._down_since is not None and time.monotonic() - self._down_since < RETRY_REDIS_AFTER:
            return local()
        try:
            result = remote()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if self._down_since is None and not self._warned:
                _log.error(
                    "Redis unreachable; using local state until it returns "
                    "(a repeat may page again, nothing is dropped)",
                    error=str(exc),
                )
                self._warned = True
            self._down_since = time.monotonic()
            return local()
        if self._down_since is not None:
            _log.warning("Redis reachable again; shared state resumed")
            self._down_since = None
            self._warned = False
        return result

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def now(self) -> float:
        def remote() -> float:
            seconds, micros = self._client.time()
            return seconds + micros / 1_000_000

        return self._call(remote, time.time)

    # -- dedup ------------------------------------------------------------
    def dedup_hit(self, key: str, window: float, text: str, count: int = 1) -> DedupHit:
        def remote() -> DedupHit:
            first, suppressed = self._scripts["hit"](
                keys=[self._k("w", key), self._k("windows")], args=[key, window, text, count]
            )
            return DedupHit(first=bool(first), suppressed=int(suppressed))

        return self._call(remote, lambda: self._local.dedup_hit(key, window, text, count))

    def dedup_close(self, repeat_interval: float, limit: int = 500) -> list[ClosedWindow]:
        def remote() -> list[ClosedWindow]:
            rows = self._scripts["close"](
                keys=[self._k("windows")], args=[self._k("w", ""), repeat_interval, limit]
            )
            return [ClosedWindow(r[0], int(r[1]), float(r[2]), r[3]) for r in rows]

        local = self._local.dedup_close(repeat_interval, limit)
        return local + self._call(remote, list)

    def dedup_close_all(self) -> list[ClosedWindow]:
        return self._local.dedup_close_all()  # shared windows outlive this process

    # -- rate limits --------------------------------------------------------
    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        def remote() -> float:
            return float(
                self._scripts["rate"](keys=[self._k("r", key)], args=[rate, burst, "1" if reserve else "0"])
            )

        return self._call(remote, lambda: self._local.rate_acquire(key, rate, burst, reserve=reserve))

    # -- digests --------------------------------------------------------------
    def digest_add(self, msisdn: str, text: str) -> int:
        def remote() -> int:
            pipe = self._client.pipeline()
            pipe.rpush(self._k("d", msisdn), text)
            pipe.sadd(self._k("digests"), msisdn)
            return int(pipe.execute()[0])

        return self._call(remote, lambda: self._local.digest_add(msisdn, text))

    def digest_recipients(self) -> list[str]:
        remote = self._call(lambda: sorted(self._client.smembers(self._k("digests"))), list)
        return list(dict.fromkeys(self._local.digest_recipients() + remote))

    def digest_take(self, msisdn: str) -> list[str]:
        def remote() -> list[str]:
            return list(
                self._scripts["digest_take"](keys=[self._k("d", msisdn), self._k("digests")], args=[msisdn])
            )

        return self._local.digest_take(msisdn) + self._call(remote, list)

    # -- outbox ---------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        def remote() -> None:
            pipe = self._client.pipeline()
            for item in items:
                pipe.hset(self._k("o", item.csms_id), mapping=_to_hash(item))
                pipe.zadd(self._k("due"), {item.csms_id: item.next_attempt_at})
            pipe.execute()

        def local() -> None:
            self._local.outbox_add(items)
            self._local_ids.update(i.csms_id for i in items)

        self._call(remote, local)

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        def remote() -> list[OutboxItem]:
            rows = self._scripts["claim"](keys=[self._k("due")], args=[self._k("o", ""), limit, lease])
            return [self._item_from_flat(flat) for flat in rows]

        local = self._local.outbox_claim(limit, lease) if self._local_ids else []
        return local + self._call(remote, list)

    def _item_from_flat(self, flat: list[str]) -> OutboxItem:
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return _to_item(raw["csms_id"], raw)

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        local = [i for i in items if i.csms_id in self._local_ids]
        if local:
            self._local.outbox_update(local)
            self._local_ids.difference_update(i.csms_id for i in local if i.state is OutboxState.SENT)
        shared = [i for i in items if i.csms_id not in self._local_ids]
        if not shared:
            return

        def remote() -> None:
            pipe = self._client.pipeline()
            for item in shared:
                key = self._k("o", item.csms_id)
                if item.state is OutboxState.SENT:
                    pipe.delete(key)
                    pipe.zrem(self._k("due"), item.csms_id)
                    continue
                pipe.hset(key, mapping=_to_hash(item))
                if item.state is OutboxState.DEAD:
                    pipe.zrem(self._k("due"), item.csms_id)
                    pipe.sadd(self._k("dead"), item.csms_id)
                else:
                    pipe.zadd(self._k("due"), {item.csms_id: item.next_attempt_at})
            pipe.execute()

        def keep_locally() -> None:
            self._local.outbox_update(shared)
            self._local_ids.update(i.csms_id for i in shared if i.state is not OutboxState.SENT)

        self._call(remote, keep_locally)

    def _remote_items(self, ids: Sequence[str]) -> list[OutboxItem]:
        pipe = self._client.pipeline()
        for csms_id in ids:
            pipe.hgetall(self._k("o", csms_id))
        return [_to_item(i, raw) for i, raw in zip(ids, pipe.execute(), strict=True) if raw]

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]:
        def remote() -> list[OutboxItem]:
            ids = list(self._client.zrange(self._k("due"), 0, -1)) + list(
                self._client.smembers(self._k("dead"))
            )
            return self._remote_items(ids)

        items = self._local.outbox_list(None, limit) + self._call(remote, list)
        items = [i for i in items if state is None or i.state is state]
        return sorted(items, key=lambda i: i.created_at)[:limit]

    def outbox_counts(self) -> OutboxCounts:
        counts = self._local.outbox_counts()
        for item in self._call(lambda: self.outbox_list(limit=1_000_000), list):
            if item.csms_id in self._local_ids:
                continue
            setattr(counts, item.state.value, getattr(counts, item.state.value) + 1)
        return counts

    def outbox_open(self) -> int:
        # every pending or in-flight SMS has a score in the "due" set
        return self._local.outbox_open() + self._call(lambda: int(self._client.zcard(self._k("due"))), int)

    def outbox_next_due(self) -> float | None:
        def remote() -> float | None:
            first = self._client.zrange(self._k("due"), 0, 0, withscores=True)
            return float(first[0][1]) if first else None

        due = [d for d in (self._local.outbox_next_due(), self._call(remote, lambda: None)) if d is not None]
        return min(due, default=None)

    def outbox_requeue(self, csms_ids: Sequence[str]) -> int:
        now = self.now()
        count = self._local.outbox_requeue(csms_ids)
        for item in self._call(lambda: self._remote_items(list(csms_ids)), list):
            if item.state is OutboxState.DEAD:
                self.outbox_update([item.evolve(state=OutboxState.PENDING, next_attempt_at=now)])
                self._call(lambda i=item: self._client.srem(self._k("dead"), i.csms_id), lambda: 0)
                count += 1
        return count

    def outbox_purge(self, state: OutboxState) -> int:
        doomed = [i for i in self.outbox_list(state, limit=1_000_000)]
        count = self._local.outbox_purge(state)

        def remote() -> int:
            pipe = self._client.pipeline()
            for item in doomed:
                if item.csms_id in self._local_ids:
                    continue
                pipe.delete(self._k("o", item.csms_id))
                pipe.zrem(self._k("due"), item.csms_id)
                pipe.srem(self._k("dead"), item.csms_id)
            pipe.execute()
            return len([i for i in doomed if i.csms_id not in self._local_ids])

        return count + self._call(remote, lambda: 0)

    def close(self) -> None:
        self._client.close()

    def after_fork(self) -> None:
        # redis-py's pool notices the new pid and reconnects by itself.
        self._local.after_fork()
