"""The alert pipeline: requests per SMS, decision cost, and a storm from 8 threads."""

from __future__ import annotations

import gc
import queue
import threading
import time
import tracemalloc

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator
from sslsms_notify.stores import MemoryStore

from ._util import header, per_call_ns, row


def _notifier(emulator: GatewayEmulator, **kw) -> Notifier:
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator))
    kw.setdefault("per_recipient_limit", None)
    return Notifier(client, dispatch=DispatchPolicy(tps=10_000), close_at_exit=None, **kw)


def requests_per_text() -> dict[str, float]:
    emulator = GatewayEmulator()
    group = [f"0171{i:07d}" for i in range(250)]
    n = _notifier(emulator, groups={"oncall": group})
    for _ in range(1000):
        n.alert("Disk full on db1", severity="critical", source="app.db")
    n.close(30)
    stats = n.stats()
    distinct = len({m.text for m in emulator.messages()})  # the alert and its "[x999]" summary
    per_text = stats["requests"] / distinct
    header("Requests per SMS: 1,000 alerts of one text to a 250-number group")
    row("requests per distinct text", f"{per_text:.0f}", "250", f"{250 / per_text:.0f}x fewer")
    row("SMS delivered (alert + summary, 250 phones)", f"{stats['sent']:,}", "250,000", "")
    return {"requests_per_text": per_text, "sms": stats["sent"], "requests": stats["requests"]}


def decisions() -> dict[str, float]:
    store = MemoryStore()
    lock = threading.Lock()
    counts: dict[str, int] = {}

    def floor() -> None:  # the least a thread-safe counter can cost
        with lock:
            counts["k"] = counts.get("k", 0) + 1

    keys = [f"oncall\x1f40\x1ffp{i}" for i in range(20)]
    i = iter(range(10**9))

    def dedup() -> None:
        store.dedup_hit(keys[next(i) % 20], 300.0, "[ERROR] db1: text")

    def throttle() -> None:
        store.rate_acquire(keys[next(i) % 20], 10 / 3600, 10, reserve=False)

    floor_ns = per_call_ns(floor, 200_000)
    dedup_ns = per_call_ns(dedup, 200_000)
    throttle_ns = per_call_ns(throttle, 200_000)
    header("Decision cost in memory (one core)")
    row(
        "dedup decisions/s", f"{1e9 / dedup_ns:,.0f}", f"{1e9 / floor_ns:,.0f}", f"{floor_ns / dedup_ns:.2f}x"
    )
    row(
        "throttle decisions/s",
        f"{1e9 / throttle_ns:,.0f}",
        f"{1e9 / floor_ns:,.0f}",
        f"{floor_ns / throttle_ns:.2f}x",
    )
    return {"dedup_per_s": 1e9 / dedup_ns, "throttle_per_s": 1e9 / throttle_ns}


def storm() -> dict[str, float]:
    emulator = GatewayEmulator()
    n = _notifier(emulator, recipients=["01711111111", "01811111111"], queue_size=200_000)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()

    def produce(worker: int) -> None:
        for i in range(12_500):
            n.alert(f"storm kind {'abcdefghijklmnopqrst'[(worker + i) % 20]}", source="app")

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    produced = time.perf_counter() - start
    n.flush(60)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    stats = n.stats()
    n.close(30)

    # per-call cost of alert() against SimpleQueue.put of the same object, same run
    quiet = _notifier(GatewayEmulator(), recipients=["01711111111"], queue_size=10**7, start=False)
    plain: queue.SimpleQueue = queue.SimpleQueue()
    alert_ns = per_call_ns(lambda: quiet.alert("storm kind a", source="app"), 100_000)
    put_ns = per_call_ns(lambda: plain.put("storm kind a"), 100_000)
    header("Storm: 100,000 alerts from 8 threads, 20 fingerprints, 2 phones")
    row("SMS sent", f"{stats['sent']}", "200,000", "")
    row("alerts suppressed / dropped", f"{stats['suppressed']:,} / {stats['dropped']}")
    row("producer wall time (8 threads)", f"{produced * 1000:.0f} ms")
    row("memory retained after the storm", f"{(after - before) / 1024:.0f} KiB")
    row(
        "alert() per call vs SimpleQueue.put",
        f"{alert_ns:.0f} ns",
        f"{put_ns:.0f} ns",
        f"{alert_ns / put_ns:.1f}x",
    )
    return {
        "storm_sms": stats["sent"],
        "alert_ns": alert_ns,
        "put_ns": put_ns,
        "memory_kib": (after - before) / 1024,
    }


def main() -> dict[str, float]:
    results = {}
    results.update(requests_per_text())
    results.update(decisions())
    results.update(storm())
    return results


if __name__ == "__main__":
    main()
