"""How long from ``alert()`` until the alert is durable in the store, while the gateway hangs.

Intake (dedup, caps, the write to the outbox) runs on its own thread and never
waits for HTTP, so a hanging gateway must not change this figure. Each alert is
submitted with :meth:`Notifier.submit`; its ticket resolves right after the
intake transaction that wrote it commits. 1,000 distinct alerts at 500/s per run,
default settings, the emulator in its own process. Target: p99 under 50 ms.

Baseline: the same run against a healthy gateway, interleaved round by round.
"""

from __future__ import annotations

import tempfile
import time

import httpx

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID

from ._util import ROUNDS, Samples, emulator_process, header, interleaved, ns, redis_server, row, word

ALERTS, RATE = 1_000, 500.0
_run = iter(range(10**6))


def _latencies(url: str, store: str) -> tuple[float, list[int]]:
    notifier = Notifier(
        GatewayClient(DEMO_API_TOKEN, DEMO_SID, base_url=url),
        recipients=["01711111111"],
        store=store,
        close_at_exit=None,
    )
    run = next(_run)
    tickets = []
    started = time.perf_counter()
    for i in range(ALERTS):
        # pace to RATE; the submit time is taken right before the call
        delay = started + i / RATE - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        submitted = time.perf_counter_ns()
        tickets.append((submitted, notifier.submit(f"run {word(run)} alert {word(i)} failed", source="app")))
    latencies = []
    for submitted, ticket in tickets:
        ticket.wait(30)
        latencies.append(ticket.resolved_ns - submitted)
    notifier.close(2)
    ordered = sorted(latencies)
    return ordered[int(0.99 * len(ordered))], latencies


def main() -> dict[str, float]:
    results: dict[str, float] = {}
    with emulator_process() as url, redis_server() as redis_url, tempfile.TemporaryDirectory() as directory:
        control = httpx.Client(base_url=url)
        import redis

        def run(store_kind: str, hanging: bool) -> tuple[float, list[int]]:
            control.delete("/__emulator/faults")
            if hanging:  # every request hangs for 30 s, then the connection drops
                control.post("/__emulator/faults", json={"kind": "timeout", "seconds": 600, "hold": 30})
            if store_kind == "sqlite":
                store = f"sqlite:///{directory}/latency-{next(_run)}.db"
            else:
                redis.Redis.from_url(redis_url).flushall()
                store = redis_url
            return _latencies(url, store)

        for kind in ("sqlite", "redis"):
            samples = interleaved(
                {
                    "healthy gateway": lambda k=kind: run(k, False),
                    "gateway hangs": lambda k=kind: run(k, True),
                }
            )
            _report(kind, samples)
            results[f"{kind}_hanging_p99_ms"] = samples["gateway hangs"].pct(99) / 1e6
            results[f"{kind}_healthy_p99_ms"] = samples["healthy gateway"].pct(99) / 1e6
        control.delete("/__emulator/faults")
    return results


def _report(kind: str, samples: dict[str, Samples]) -> None:
    header(
        f"alert() -> durable in the {kind} store: {ALERTS:,} alerts at {RATE:.0f}/s x {ROUNDS} rounds",
        ("p50", "p99", "max", "p99 per round"),
    )
    for name, s in samples.items():
        per_round = "/".join(f"{r / 1e6:.1f}" for r in s.rounds)
        row(name, ns(s.pct(50)), ns(s.pct(99)), ns(max(s.latencies_ns)), f"{per_round} ms")
    hanging, healthy = samples["gateway hangs"], samples["healthy gateway"]
    row("hanging / healthy (p99; target: p99 < 50 ms)", "", f"{hanging.pct(99) / healthy.pct(99):.2f}x")


if __name__ == "__main__":
    main()
