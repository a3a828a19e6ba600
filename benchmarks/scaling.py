"""Flat cost at scale: 1k, 10k, 100k, 1M distinct alerts through one Notifier (default settings).

Each size runs in a fresh process (so RSS means something). Alerts are fed in
chunks of 5,000 with ``sync()`` after each (so nothing is dropped and the
worker's cost is part of the figure). Then:

- RSS over the same process before the Notifier existed;
- idle CPU over 3 s with every window still live (the worker should sleep);
- every window is made to expire at once (the store's clock jumps 301 s) and
  the longest timer round that sweeps them is reported: a sweep handles at most
  250 windows (SWEEP_LIMIT), found through a time index, never by scanning all of them.

Memory is bounded by ``max_windows`` (100,000 by default): beyond it, the
windows ending first are evicted (counted). The ratio column compares each
size's cost per alert with the 1k row: flat cost is 1.0x.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from ._util import cpu_seconds, header, row, rss_mib
from ._util import word as _word

SIZES = (1_000, 10_000, 100_000, 1_000_000)


def one(size: int) -> dict[str, float]:
    from sslsms_notify import GatewayClient, Notifier
    from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport

    rss_before = rss_mib()
    offset = [0.0]
    notifier = Notifier(
        GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport()),
        recipients=["01711111111"],
        clock=lambda: time.time() + offset[0],
        close_at_exit=None,
    )
    durations: list[float] = []
    timers = notifier.timers.run

    def timed(**kwargs: bool) -> bool:
        started = time.perf_counter()
        worked = timers(**kwargs)
        durations.append(time.perf_counter() - started)
        return worked

    notifier.timers.run = timed  # type: ignore[method-assign]
    started = time.perf_counter()
    for chunk in range(0, size, 5_000):
        for i in range(chunk, min(size, chunk + 5_000)):
            notifier.alert(f"distinct alert {_word(i)} on checkout", source="app")
        notifier.sync(120)
    per_alert_us = (time.perf_counter() - started) / size * 1e6
    rss = rss_mib() - rss_before
    durations.clear()
    cpu, wall = cpu_seconds(), time.perf_counter()
    time.sleep(3)
    idle_cpu = (cpu_seconds() - cpu) / (time.perf_counter() - wall)
    live_sweep_ms = max(durations, default=0) * 1000
    windows_live = notifier.store.window_count()
    durations.clear()
    offset[0] += 301  # every window has ended
    deadline = time.monotonic() + 120
    while notifier.store.window_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    expired_sweep_ms = max(durations, default=0) * 1000
    stats = notifier.stats()
    notifier.close(10)
    return {
        "size": size,
        "us_per_alert": per_alert_us,
        "rss_mib": rss,
        "idle_cpu": idle_cpu,
        "live_sweep_ms": live_sweep_ms,
        "expired_sweep_ms": expired_sweep_ms,
        "windows": windows_live,
        "evicted": stats["evicted"],
        "dropped": stats["dropped"],
    }


def main() -> dict[str, float]:
    rows = []
    for size in SIZES:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.scaling", "--one", str(size)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    header(
        "Scaling: distinct alerts through one Notifier (memory store, default max_windows 100,000)",
        ("µs/alert", "vs 1k", "RSS MiB", "idle CPU", "sweep ms", "windows"),
    )
    for r in rows:
        row(
            f"{int(r['size']):,} alerts ({int(r['evicted']):,} evicted, {int(r['dropped'])} dropped)",
            f"{r['us_per_alert']:.1f}",
            f"{r['us_per_alert'] / rows[0]['us_per_alert']:.2f}x",
            f"{r['rss_mib']:.1f}",
            f"{r['idle_cpu'] * 100:.2f}%",
            f"{max(r['live_sweep_ms'], r['expired_sweep_ms']):.1f}",
            f"{int(r['windows']):,}",
        )
    print("  (sweep ms: the longest timer round, while idle and while every window expires at once)")
    return {f"scale_{int(r['size'])}_us": r["us_per_alert"] for r in rows}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(one(int(sys.argv[2]))))
    else:
        main()
