"""Outbox throughput per store, and what ``stats()`` costs with a backlog.

- 20,000 SMS enqueued, claimed and acknowledged in batches of 100, as the
  dispatcher works. Baselines, interleaved: the memory store (no I/O), and for
  Redis the same work written by hand with the fewest commands (one HSET and one
  ZADD per batch, a claim as ZRANGEBYSCORE + ZADD + HMGET, an ack as HDEL +
  ZREM): the floor any Redis outbox has to pay.
- ``outbox_counts()`` (what ``stats()`` reads) with 10,000 SMS pending: counters,
  not scans, so the same as with 10.
"""

from __future__ import annotations

import json
import tempfile
import time
from typing import Any

import redis

from sslsms_notify.gateway.ids import new_csms_id
from sslsms_notify.stores import MemoryStore, OutboxItem, OutboxState, open_store

from ._util import ROUNDS, header, interleaved, rate, redis_server, row

TOTAL, BATCH = 20_000, 100


def _throughput(store: Any) -> float:
    started = time.perf_counter()
    for _ in range(TOTAL // BATCH):
        now = store.now()
        store.outbox_add(
            [OutboxItem(new_csms_id(), "8801711111111", "bench", now, now) for _ in range(BATCH)]
        )
        claimed = store.outbox_claim(BATCH, 30)
        store.outbox_update([i.evolve(state=OutboxState.SENT) for i in claimed])
    elapsed = time.perf_counter() - started
    assert store.outbox_counts().pending == 0
    return TOTAL / elapsed


def _redis_floor(url: str) -> float:
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushall()
    started = time.perf_counter()
    for _ in range(TOTAL // BATCH):
        now = time.time()
        batch = {
            new_csms_id(): json.dumps(["8801711111111", "bench", now, now, 0, "pending", "", "", 0])
            for _ in range(BATCH)
        }
        pipe = client.pipeline()
        pipe.hset("floor:o", mapping=batch)
        pipe.zadd("floor:due", dict.fromkeys(batch, now))
        pipe.execute()
        ids = client.zrangebyscore("floor:due", "-inf", now + 1, start=0, num=BATCH)
        pipe = client.pipeline()
        pipe.zadd("floor:due", dict.fromkeys(ids, now + 30))
        pipe.hmget("floor:o", ids)
        pipe.execute()
        pipe = client.pipeline()
        pipe.hdel("floor:o", *ids)
        pipe.zrem("floor:due", *ids)
        pipe.execute()
    elapsed = time.perf_counter() - started
    client.close()
    return TOTAL / elapsed


def _counts_cost(store: Any) -> float:
    now = store.now()
    for _ in range(100):
        store.outbox_add(
            [OutboxItem(new_csms_id(), "8801711111111", "bench", now, now) for _ in range(BATCH)]
        )
    started = time.perf_counter()
    for _ in range(100):
        store.outbox_counts()
    return (time.perf_counter() - started) / 100


def main() -> dict[str, float]:
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as directory, redis_server() as url:
        run = iter(range(10**6))

        def fresh_redis() -> Any:
            redis.Redis.from_url(url).flushall()
            return open_store(url)

        samples = interleaved(
            {
                "memory": lambda: _throughput(MemoryStore()),
                "sqlite": lambda: _throughput(open_store(f"sqlite:///{directory}/o{next(run)}.db")),
                "redis": lambda: _throughput(fresh_redis()),
                "redis floor": lambda: _redis_floor(url),
            }
        )
        header(
            f"Outbox: {TOTAL:,} SMS enqueued + claimed + acknowledged, batches of {BATCH}, {ROUNDS} rounds",
            ("min", "median", "baseline", "ratio"),
        )
        memory = samples["memory"]
        row("memory store", rate(memory.min), rate(memory.median), "", "")
        row(
            "SQLite store (WAL, one file) vs memory",
            rate(samples["sqlite"].min),
            rate(samples["sqlite"].median),
            rate(memory.median),
            f"{samples['sqlite'].median / memory.median:.2f}x",
        )
        row(
            "Redis store vs the same work by hand, batched",
            rate(samples["redis"].min),
            rate(samples["redis"].median),
            rate(samples["redis floor"].median),
            f"{samples['redis'].median / samples['redis floor'].median:.2f}x",
        )
        for name in ("memory", "sqlite", "redis"):
            results[f"outbox_{name}_per_s"] = samples[name].median

        header("stats(): outbox counts with 10,000 SMS pending", ("per call", "", "", ""))
        for name, store in (
            ("memory", MemoryStore()),
            ("sqlite", open_store(f"sqlite:///{directory}/counts.db")),
            ("redis", fresh_redis()),
        ):
            cost = _counts_cost(store)
            row(f"{name}", f"{cost * 1e6:,.0f} µs", "", "", "")
            results[f"counts_{name}_us"] = cost * 1e6
    return results


if __name__ == "__main__":
    main()
