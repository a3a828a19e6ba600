"""A storm: 100,000 alerts from 8 threads, 20 distinct alerts, to 2 phones, at default settings.

Default queue_size (50,000), worker on, the emulator in its own process. The one
setting changed: no per-phone cap (``per_recipient_limit=None``), so every
summary reaches the phone and its count can be checked: the 20 summaries must
add up to exactly 99,980 repeats, with nothing dropped.

Baseline, interleaved round by round: the same 8 threads putting the same
alerts on a ``queue.SimpleQueue`` (the least a producer can pay).
"""

from __future__ import annotations

import queue
import re
import threading
import time
from typing import Any

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID

from ._util import ROUNDS, emulator_process, header, interleaved, ns, row

THREADS, PER_THREAD, KINDS = 8, 12_500, "abcdefghijklmnopqrst"
PHONES = ["01711111111", "01811111111"]
_MORE = re.compile(r"\+(\d+) more since")


def _storm(produce_one: Any) -> tuple[float, list[int]]:
    latencies: list[list[int]] = [[] for _ in range(THREADS)]
    start_gate = threading.Barrier(THREADS + 1)

    def produce(worker: int) -> None:
        clock, mine = time.perf_counter_ns, latencies[worker]
        texts = [f"storm kind {KINDS[(worker + i) % 20]}" for i in range(PER_THREAD)]
        start_gate.wait()
        for text in texts:
            t0 = clock()
            produce_one(text)
            mine.append(clock() - t0)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(THREADS)]
    for t in threads:
        t.start()
    start_gate.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return wall * 1e9, [x for per in latencies for x in per]


def main() -> dict[str, float]:
    outcomes: list[dict[str, int]] = []
    with emulator_process() as url:
        import httpx

        control = httpx.Client(base_url=url)

        def ours() -> tuple[float, list[int]]:
            control.post("/__emulator/reset")
            client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, base_url=url)
            notifier = Notifier(client, recipients=PHONES, per_recipient_limit=None, close_at_exit=None)
            result = _storm(lambda text: notifier.alert(text, source="app"))
            notifier.close(30)
            stats = notifier.stats()
            inbox = control.get("/__emulator/messages", params={"msisdn": PHONES[0]}).json()["messages"]
            counted = sum(int(m.group(1)) for t in inbox if (m := _MORE.search(t["text"])))
            outcomes.append(
                {
                    "dropped": stats["dropped"],
                    "suppressed": stats["suppressed"],
                    "summarised": counted,
                    "sms_per_phone": len(inbox),
                    "requests": stats["requests"],
                }
            )
            return result

        plain: queue.SimpleQueue[str] = queue.SimpleQueue()

        def baseline() -> tuple[float, list[int]]:
            result = _storm(plain.put)
            while not plain.empty():
                plain.get_nowait()
            return result

        samples = interleaved({"Notifier.alert()": ours, "SimpleQueue.put()": baseline})
    total = THREADS * PER_THREAD
    header(
        f"Storm: {total:,} alerts from {THREADS} threads, 20 kinds, 2 phones, default queue; {ROUNDS} rounds",
        ("wall min", "wall median", "p50", "p99", "max"),
    )
    for name, s in samples.items():
        row(
            name,
            f"{s.min / 1e6:,.1f} ms",
            f"{s.median / 1e6:,.1f} ms",
            ns(s.pct(50)),
            ns(s.pct(99)),
            ns(max(s.latencies_ns)),
        )
    ours_s, base = samples["Notifier.alert()"], samples["SimpleQueue.put()"]
    row("ratio (wall)", f"{ours_s.min / base.min:.2f}x", f"{ours_s.median / base.median:.2f}x")
    for i, o in enumerate(outcomes, 1):
        row(
            f"round {i}: dropped / suppressed / sum of '+N more'",
            f"{o['dropped']}",
            f"{o['suppressed']:,}",
            f"{o['summarised']:,}",
            f"{o['sms_per_phone']} SMS/phone",
            f"{o['requests']} requests",
        )
    exact = all(o["dropped"] == 0 and o["summarised"] == total - 20 for o in outcomes)
    print(f"  every round: 0 dropped and summaries adding up to {total - 20:,}: {'yes' if exact else 'NO'}")
    return {
        "storm_wall_ms": ours_s.median / 1e6,
        "storm_ratio": ours_s.median / base.median,
        "storm_exact": float(exact),
    }


if __name__ == "__main__":
    main()
