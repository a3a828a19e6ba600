"""The intake worker's throughput: alerts decided per second, default settings.

The queue is filled first, then the worker drains it (timed): this measures the
worker, not the producers. Each figure has a baseline doing the least the same
work can cost, interleaved round by round:

- repeats of known alerts (20 alerts, windows open; queued items, not counted at
  the caller, so the worker sees every one): target 500,000/s. Baseline: a
  Counter over the same items.
- repeats of one template with different numbers ("order 17 failed", "order 18
  failed"): each text is new to the worker. Same baseline.
- distinct alerts into a SQLite store (one phone, default cap: beyond 10 SMS an
  hour they fold into a digest): target 30,000/s. Baseline: the same windows and
  outbox rows written with bare ``executemany`` in one transaction per 5,000.
- distinct alerts into memory and Redis, for reference.
"""

from __future__ import annotations

import collections
import sqlite3
import tempfile
import time
from typing import Any

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting.queued import pack
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport

from ._util import ROUNDS, header, interleaved, rate, redis_server, row
from ._util import word as _word

KNOWN = [pack(f"known alert {k}", 40, source="app") for k in range(20)]


def _notifier(store: str | None = None) -> Notifier:
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport())
    return Notifier(
        client, recipients=["01711111111"], store=store, start=False, close_at_exit=None, queue_size=10**7
    )


def _drain(notifier: Notifier, items: int) -> float:
    started = time.perf_counter()
    while notifier.intake.queue:
        notifier.intake.round()
    return items / (time.perf_counter() - started)


def exact_repeats(count: int = 500_000) -> float:
    notifier = _notifier()
    for payload in KNOWN:
        notifier.intake.queue.append((payload, payload, 1, None))
    _drain(notifier, len(KNOWN))
    for i in range(count):
        payload = KNOWN[i % 20]
        notifier.intake.queue.append((payload, payload, 1, None))
    return _drain(notifier, count)


def template_repeats(count: int = 100_000) -> float:
    notifier = _notifier()
    for i in range(count):
        payload = pack(f"order {i} failed: card declined", 40, source="app")
        notifier.intake.queue.append((None, payload, 1, None))
    return _drain(notifier, count)


def counter_floor(count: int = 500_000) -> float:
    items = [KNOWN[i % 20] for i in range(count)]
    started = time.perf_counter()
    counts: collections.Counter[Any] = collections.Counter()
    for item in items:
        counts[item] += 1
    return count / (time.perf_counter() - started)


def _distinct(store: str | None, count: int) -> float:
    notifier = _notifier(store)
    for i in range(count):
        notifier.alert(f"distinct alert {_word(i)} on checkout", source="app")
    result = _drain(notifier, count)
    notifier.close(10)
    return result


def sqlite_floor(count: int = 50_000) -> float:
    with tempfile.TemporaryDirectory() as directory:
        db = sqlite3.connect(f"{directory}/floor.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE windows (key TEXT PRIMARY KEY, end_at REAL, body TEXT)")
        db.execute("CREATE TABLE digests (msisdn TEXT PRIMARY KEY, count INTEGER, texts TEXT)")
        started = time.perf_counter()
        for start in range(0, count, 5000):
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO windows VALUES (?,?,?)",
                [
                    (f"oncall\x1f40\x1f{i:020x}", 1.0, f"[ERROR] app: alert {i}")
                    for i in range(start, start + 5000)
                ],
            )
            db.execute("INSERT OR REPLACE INTO digests VALUES ('8801711111111', ?, '[]')", (start,))
            db.execute("COMMIT")
        elapsed = time.perf_counter() - started
        db.close()
    return count / elapsed


def main() -> dict[str, float]:
    results: dict[str, float] = {}
    header(
        f"Intake worker throughput (queue filled first, then drained; {ROUNDS} rounds)",
        ("min", "median", "baseline", "ratio"),
    )
    samples = interleaved({"exact": exact_repeats, "template": template_repeats, "counter": counter_floor})
    floor = samples["counter"]
    row(
        "repeats of known alerts (target >= 500k/s)",
        rate(samples["exact"].min),
        rate(samples["exact"].median),
        rate(floor.median),
        f"{samples['exact'].median / floor.median:.2f}x",
    )
    row(
        "repeats of one template, new numbers",
        rate(samples["template"].min),
        rate(samples["template"].median),
        rate(floor.median),
        f"{samples['template'].median / floor.median:.2f}x",
    )
    results["exact_repeats_per_s"] = samples["exact"].median
    results["template_repeats_per_s"] = samples["template"].median

    with tempfile.TemporaryDirectory() as directory, redis_server() as redis_url:
        counter = iter(range(1000))
        samples = interleaved(
            {
                "sqlite": lambda: _distinct(f"sqlite:///{directory}/w{next(counter)}.db", 50_000),
                "floor": sqlite_floor,
                "memory": lambda: _distinct(None, 50_000),
                "redis": lambda: _distinct(redis_url, 20_000),
            }
        )
    floor = samples["floor"]
    for name, label in (
        ("sqlite", "distinct alerts, SQLite (target >= 30k/s)"),
        ("memory", "distinct alerts, memory"),
        ("redis", "distinct alerts, Redis"),
    ):
        s = samples[name]
        row(label, rate(s.min), rate(s.median), rate(floor.median), f"{s.median / floor.median:.2f}x")
        results[f"distinct_{name}_per_s"] = s.median
    print("  (baseline for distinct alerts: the same windows written by bare executemany into SQLite)")
    return results


if __name__ == "__main__":
    main()
