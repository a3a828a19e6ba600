"""Redis alone: the pipeline's tables and the outbox on one server, with no fallback.

Transactions ``WATCH`` every row they read and commit with ``MULTI``/``EXEC``;
a conflict with another process reruns the transaction. Times come from the
server (``TIME``), so hosts with drifting clocks agree on windows and rates.
Commands carry many members each (one ``HSET`` for a whole batch of SMS, one
``ZADD`` for their due times), so a round costs a few round trips, not a few
per SMS.

Every call raises what redis-py raises: :class:`~sslsms_notify.stores.redis.RedisStore`
tells a fault from a bug (:func:`.faults.fault_of`) and decides where a call goes while
Redis fails. The methods named like the :class:`~..base.Store`'s do the same in Redis;
the others return what that store needs to know of what Redis did.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis

from ..._log import get_logger
from ...validation import mask_credentials, parse_sentinel_url
from ..base import IndexedTable, OutboxCounts, OutboxItem, OutboxState, TableName, Tx
from .codec import INDEXED, ROW_PREFIX, decode_row, encode_row, item_from, item_json, time_of
from .connect import check_service, connect
from .persistence import read_persistence
from .replication import Replication
from .scripts import Scripts

_log = get_logger("sslsms_notify.stores.redis")
T = TypeVar("T")
MAX_CONFLICTS = 100


class CommitUnknown(redis.ConnectionError):
    """The connection failed during ``EXEC`` or the ``WAIT`` after it: Redis may have the
    transaction's writes, or not. Whoever reruns it elsewhere must treat its SMS as
    possibly sent (another process may claim and send the copy Redis has)."""


#: how long the member set of a bound request outlives its last write (claims and
#: trims read it; an entry whose item has moved on is ignored)
BINDING_TTL = 8 * 24 * 3600
#: SMS per call of the script that re-adds them (five arguments each)
READD_CHUNK = 400


def binds(item: OutboxItem) -> bool:
    """Whether writing ``item`` binds it to a request about to go out (see :meth:`OutboxItem.bind`)."""
    return item.state is OutboxState.INFLIGHT and bool(item.batch_id)


class _RedisTx:
    """The Backend of a :class:`Tx` on Redis: reads WATCH what they load."""

    def __init__(self, redis_: RedisBackend, pipe: Any) -> None:
        self.redis = redis_
        self.pipe = pipe

    def load(self, table: TableName, keys: list[str]) -> dict[str, object]:
        names = [self.redis.key(ROW_PREFIX[table], k) for k in keys]
        self.pipe.watch(*names)
        found: dict[str, object] = {}
        for key, raw in zip(keys, self.pipe.mget(names), strict=True):
            if raw is not None:
                found[key] = decode_row(table, key, raw)
        return found

    def due(self, table: IndexedTable, now: float, limit: int) -> list[str]:
        return list(self.pipe.zrangebyscore(self.redis.key(table), "-inf", now, start=0, num=limit))

    def earliest(self, table: IndexedTable, limit: int) -> list[str]:
        return list(self.pipe.zrange(self.redis.key(table), 0, limit - 1))

    def count(self, table: IndexedTable) -> int:
        return int(self.pipe.zcard(self.redis.key(table)))


class RedisBackend:
    """The tables and the outbox in Redis, under ``prefix`` (see :mod:`.codec` for the keys)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        socket_timeout: float,
        replica_wait: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self._socket_timeout = socket_timeout
        # Any: the published stubs lag redis-py (zmscore untyped, invariant mappings).
        self.client: Any
        self.client, self.sentinel = connect(url, socket_timeout=socket_timeout)
        self.scripts = Scripts(self.client)
        #: in a forked child, the parent's clients: kept so that their finalizers never run here
        self._inherited: list[Any] = []
        #: WAIT for a replica after the writes that must survive a failover (see :mod:`.replication`)
        self.replication = Replication(replica_wait, url)
        #: what the server keeps across a restart, once it has answered (see describe_persistence)
        self.persistence: str | None = None

    def key(self, *parts: str) -> str:
        return self.prefix + "".join(parts)

    def ping(self) -> None:
        self.client.ping()

    def misconfigured(self) -> str | None:
        """What in the URL no server can fix (a service no sentinel monitors), or None."""
        if self.sentinel is None:
            return None
        return check_service(self.sentinel, parse_sentinel_url(self.url).service)

    def server_time(self) -> float:
        seconds, micros = self.client.time()
        return float(seconds) + float(micros) / 1_000_000

    def describe_server(self) -> None:
        """Say once, at start (or when Redis first answers), what a restart of it would lose."""
        described = read_persistence(self.client)
        if described is None:
            return  # said when Redis answers
        with contextlib.suppress(redis.RedisError, OSError):
            self.replication.refresh(self.client)
        line, warn = described
        self.persistence = line
        (_log.warning if warn else _log.info)(line, store=mask_credentials(self.url))

    def reconnect(self) -> None:
        """Drop the idle connections: the next ones resolve the host name (or ask the sentinels) again.

        Not those in use: closing a socket under another thread's command makes redis-py
        fail there with whatever it was reading (seen: ``AttributeError`` on a None
        buffer, which no fault rule knows, so an intake round was held). Each connection
        in use is idle again when its command ends; one that then meets the demoted master
        fails on its own, and that failure drops it.
        """
        self.client.connection_pool.disconnect(inuse_connections=False)

    def close(self) -> None:
        self.client.close()
        if self.sentinel is not None:
            self.sentinel.close()

    def after_fork(self) -> None:
        """In a forked child: a client of its own (no I/O here: it connects on first use).

        redis-py gives a pool a fresh lock and fresh connections at a new pid, but not the
        locks around it: a thread of the parent inside ``release()`` at the fork holds the
        pool's event-dispatcher lock for good in the child, and every command of the child
        then waits forever (seen: 1 child of 40 under load). The parent's clients are kept,
        unused, so that their finalizers never take those locks here either.
        """
        self._inherited.append((self.client, self.sentinel))
        allow_oom = self.scripts.allow_oom
        self.client, self.sentinel = connect(self.url, socket_timeout=self._socket_timeout)
        self.scripts = Scripts(self.client)
        self.scripts.allow_oom = allow_oom
        self.replication.after_fork()

    # -- transactions -------------------------------------------------------------
    def transact(
        self,
        fn: Callable[[Tx], T],
        *,
        now: float | None = None,
        on_commit: Callable[[Tx], None] | None = None,
    ) -> T:
        """Run ``fn`` in a transaction (again after a conflict); ``on_commit(tx)`` once it wrote.

        ``now``: the time of the first attempt (else the server's); later attempts ask the server.
        """
        with self.replication.connection(self.client) as client:
            for attempt in range(MAX_CONFLICTS):
                at = now if attempt == 0 and now is not None else self.server_time()
                with client.pipeline() as pipe:
                    pipe.watch(self.key("tx"))  # immediate mode from here; nobody writes this key
                    tx = Tx(_RedisTx(self, pipe), at)
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
                    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                        raise CommitUnknown(f"during EXEC: {exc}") from exc
                try:
                    self.replication.acknowledge(client)  # before anyone is told it is written
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    raise CommitUnknown(f"waiting for a replica: {exc}") from exc
                if on_commit is not None:
                    on_commit(tx)
                return result
        raise RuntimeError(f"Redis transaction gave up after {MAX_CONFLICTS} conflicts")

    def _queue_writes(self, pipe: Any, tx: Tx) -> None:
        values: dict[str, str] = {}
        doomed: list[str] = []
        for table in INDEXED:
            dirty = getattr(tx, table).dirty
            if not dirty:
                continue
            scores: dict[str, float] = {}
            gone: list[str] = []
            for key, row in dirty.items():
                name = self.key(ROW_PREFIX[table], key)
                if row is None:
                    doomed.append(name)
                    gone.append(key)
                else:
                    values[name] = encode_row(table, row)
                    scores[key] = time_of(table, row)
            if scores:
                pipe.zadd(self.key(table), scores)
            if gone:
                pipe.zrem(self.key(table), *gone)
        if values:
            pipe.mset(values)
        if doomed:
            pipe.delete(*doomed)
        for key, tat in tx.rates.dirty.items():
            name = self.key("r:", key)
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
            pipe.sadd(self.key("bm:", batch_id), *ids)
            pipe.expire(self.key("bm:", batch_id), BINDING_TTL)

    def _queue_outbox_add(self, pipe: Any, items: Sequence[OutboxItem]) -> None:
        pipe.hset(self.key("o"), mapping={i.csms_id: item_json(i) for i in items})
        self._queue_bindings(pipe, items)
        open_items = {i.csms_id: i.next_attempt_at for i in items if i.state is not OutboxState.DEAD}
        dead = {i.csms_id: i.next_attempt_at for i in items if i.state is OutboxState.DEAD}
        if open_items:
            pipe.zadd(self.key("due"), open_items)
        if dead:
            pipe.zadd(self.key("dead"), dead)

    def next_due(self) -> float | None:
        pipe = self.client.pipeline(transaction=False)
        for table in INDEXED:
            pipe.zrange(self.key(table), 0, 0, withscores=True)
        firsts = [r[0][1] for r in pipe.execute() if r]
        return min(firsts, default=None)

    def window_count(self) -> int:
        return int(self.client.zcard(self.key("windows")))

    def rate_acquire(self, key: str, rate: float, burst: int, *, reserve: bool) -> float:
        return float(self.scripts.run("rate", [self.key("r:", key)], [rate, burst, "1" if reserve else "0"]))

    # -- outbox ---------------------------------------------------------------------
    def outbox_add(self, items: Sequence[OutboxItem]) -> None:
        with self.replication.connection(self.client) as client:
            pipe = client.pipeline()
            self._queue_outbox_add(pipe, items)
            pipe.execute()
            self.replication.acknowledge(client)  # before the spool forgets them, say

    def outbox_claim(self, limit: int, lease: float) -> list[OutboxItem]:
        with self.replication.connection(self.client) as client:
            ids, raws, taken_over, until = self.scripts.run(
                "claim",
                [self.key("due"), self.key("o"), self.key("claimed")],
                [limit, lease, self.key("bm:")],
                client=client,
            )
            if ids:  # a claim the next master lacks would let another process send them as new
                self.replication.acknowledge(client)
        items = []
        for csms_id, raw, flag in zip(ids, raws, taken_over, strict=True):
            item = item_from(csms_id, raw, float(until), claimed=True)
            if flag == "1" and not item.maybe_sent:  # its owner died mid-request: it may be sent
                item = item.evolve(maybe_sent=True)
            items.append(item)
        return items

    def outbox_renew(self, csms_ids: Sequence[str], lease: float) -> None:
        self.scripts.run("renew", [self.key("due"), self.key("claimed")], [lease, *csms_ids])

    def outbox_update(self, items: Sequence[OutboxItem]) -> None:
        args: list[Any] = [self.key("bm:"), BINDING_TTL]
        for item in items:
            sent = item.state is OutboxState.SENT
            args += [
                item.csms_id,
                item.state.value,
                "" if sent else item_json(item),
                repr(item.next_attempt_at),
                "" if sent else item.batch_id or "",
            ]
        keys = [self.key("o"), self.key("due"), self.key("dead"), self.key("claimed")]
        if not any(binds(item) for item in items):
            self.scripts.run("update", keys, args)
            return
        # A binding is what a rerun of the request rests on (the same members under the same
        # batch_csms_id): like a claim, a replica must have it before the request goes out.
        with self.replication.connection(self.client) as client:
            self.scripts.run("update", keys, args, client=client)
            self.replication.acknowledge(client)

    def outbox_get(self, csms_ids: Sequence[str]) -> dict[str, OutboxItem]:
        ids = list(csms_ids)
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.key("o"), ids)
        pipe.zmscore(self.key("due"), ids)
        pipe.hmget(self.key("claimed"), ids)
        raws, scores, claims = pipe.execute()
        found = {}
        for csms_id, raw, score, claim in zip(ids, raws, scores, claims, strict=True):
            if raw is not None:
                found[csms_id] = item_from(csms_id, raw, score, claimed=claim is not None)
        return found

    def outbox_list(self, state: OutboxState | None = None, limit: int = 1000) -> list[OutboxItem]:
        ids: list[str] = []
        if state in (None, OutboxState.PENDING, OutboxState.INFLIGHT):
            ids += list(self.client.zrange(self.key("due"), 0, limit - 1))
        if state in (None, OutboxState.DEAD):
            ids += list(self.client.zrange(self.key("dead"), 0, limit - 1))
        return list(self.outbox_get(ids).values())

    def outbox_counts(self) -> OutboxCounts:
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(self.key("due"))
        pipe.hlen(self.key("claimed"))
        pipe.zcard(self.key("dead"))
        pending, inflight, dead = pipe.execute()
        return OutboxCounts(pending=pending, inflight=min(inflight, pending), dead=dead)

    def outbox_open(self) -> int:
        return int(self.client.zcard(self.key("due")))

    def outbox_next_due(self) -> float | None:
        first = self.client.zrange(self.key("due"), 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def outbox_trim(self, max_open: int, reason: str) -> list[OutboxItem]:
        flat = self.scripts.run(
            "trim",
            [self.key("due"), self.key("o"), self.key("claimed"), self.key("dead")],
            [max_open, reason, self.key("bm:")],
        )
        return [item_from(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def outbox_expire_dead(self, older_than: float) -> int:
        return int(self.scripts.run("expire", [self.key("o"), self.key("dead")], [repr(older_than)]))

    def revive(self, csms_ids: Sequence[str]) -> list[OutboxItem]:
        """Dead letters among ``csms_ids`` back to pending, due now, with the rest of their bound
        requests' dead members; returns them as they are now."""
        now = self.server_time()
        dead = {i.csms_id: i for i in self.outbox_get(csms_ids).values() if i.state is OutboxState.DEAD}
        for batch_id in {i.batch_id for i in dead.values() if i.batch_id}:  # a bound request whole
            members = list(self.client.smembers(self.key("bm:", batch_id)))
            for item in self.outbox_get(members).values():
                if item.state is OutboxState.DEAD and item.batch_id == batch_id:
                    dead[item.csms_id] = item
        if not dead:
            return []
        pipe = self.client.pipeline()
        revived = [i.evolve(state=OutboxState.PENDING, next_attempt_at=now) for i in dead.values()]
        pipe.hset(self.key("o"), mapping={i.csms_id: item_json(i) for i in revived})
        pipe.zrem(self.key("dead"), *[i.csms_id for i in revived])
        pipe.zadd(self.key("due"), {i.csms_id: now for i in revived})
        pipe.execute()
        return revived

    def outbox_resume(self) -> int:
        return int(self.scripts.run("resume", [self.key("due"), self.key("claimed")]))

    def purge(self, state: OutboxState) -> list[str]:
        """Forget the SMS in ``state`` (pending: those not claimed); returns their ids."""
        zset = self.key("dead") if state is OutboxState.DEAD else self.key("due")
        ids = list(self.client.zrange(zset, 0, -1))
        if state is OutboxState.PENDING:
            claimed = set(self.client.hkeys(self.key("claimed")))
            ids = [i for i in ids if i not in claimed]
        if not ids:
            return []
        pipe = self.client.pipeline()
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            pipe.hdel(self.key("o"), *chunk)
            pipe.zrem(zset, *chunk)
        pipe.execute()
        return ids

    # -- the marker and re-adding lost SMS (see :mod:`.journal`) -------------------------
    def check_marker(self, token: str, csms_ids: Sequence[str]) -> tuple[str, int, str]:
        """Increment the marker (setting ``token`` if it is missing); returns its token, its
        counter, and per id "0" (Redis does not have it), "1" (open) or "2" (a dead letter)."""
        with self.replication.connection(self.client) as client:
            keys = [self.key("epoch"), self.key("o"), self.key("dead")]
            found, count, flags = self.scripts.run("epoch", keys, [token, *csms_ids], client=client)
            # trusted once a replica has it: a failover right after must not look like a loss
            self.replication.acknowledge(client)
        return found, int(count), flags

    def read_marker(self) -> tuple[str | None, int]:
        """The marker's token and counter, read only (a server that refuses writes)."""
        token, count = self.client.hmget(self.key("epoch"), ["token", "n"])
        return token, int(count or 0)

    def readd(self, items: Sequence[OutboxItem]) -> int:
        """SMS Redis lost, back as they are (at most :data:`READD_CHUNK`); returns how many it took.

        One Redis has stays unless ours is newer (more attempts, or as many and bound).
        """
        args: list[Any] = [self.key("bm:"), BINDING_TTL]
        for item in items:
            leased = item.state is OutboxState.INFLIGHT
            args += [
                item.csms_id,
                item_json(item),
                repr(item.next_attempt_at),
                repr(item.next_attempt_at) if leased else "",
                item.batch_id or "",
            ]
        keys = [self.key("o"), self.key("due"), self.key("claimed"), self.key("dead")]
        with self.replication.connection(self.client) as client:
            added = int(self.scripts.run("readd", keys, args, client=client))
            self.replication.acknowledge(client)
        return added
