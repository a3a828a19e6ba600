"""The relay's intake: ``POST /v1/alerts`` accepted per second, and the latency of each accept.

The relay runs as ``sslsms-notify serve`` would (its own process, a SQLite store,
default settings, the gateway emulator in another process): each answer comes
only once the alert is in the store. 4 client threads post one distinct alert
per request, with keep-alive. Baseline, interleaved round by round: a bare
uvicorn endpoint that reads the body and answers a constant, in its own process.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager

import httpx

from sslsms_notify.gateway.client import default_transport

from ._util import (
    ROUNDS,
    emulator_process,
    header,
    interleaved,
    ns,
    rate,
    row,
    server_process,
    word,
)
from .emulator_server import floor_process

SECONDS, THREADS = 3.0, 4
TOKEN = "bench-relay-token-000000001"


def relay_process(gateway: str, store: str) -> AbstractContextManager[str]:
    """The relay in its own process, as ``sslsms-notify serve`` runs it; yields its base URL."""
    return server_process("benchmarks.relay", "--serve", "{port}", gateway, store)


def _serve(port: int, gateway: str, store: str) -> None:
    from sslsms_notify import GatewayClient, Notifier
    from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID
    from sslsms_notify.relay.server import RelayServer
    from sslsms_notify.relay.settings import RelaySettings

    notifier = Notifier(
        GatewayClient(DEMO_API_TOKEN, DEMO_SID, base_url=gateway),
        recipients=["01711111111"],
        store=store,
        close_at_exit=None,
    )
    settings = RelaySettings(listen=f"127.0.0.1:{port}", tokens=(TOKEN,)).checked()
    RelayServer(notifier, settings).serve_forever()


_run = iter(range(10**6))


def _load(url: str) -> tuple[float, list[int]]:
    run = next(_run)
    counts = [0] * THREADS
    latencies: list[list[int]] = [[] for _ in range(THREADS)]
    stop = time.monotonic() + SECONDS

    def worker(index: int) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        clock, mine = time.perf_counter_ns, latencies[index]
        with httpx.Client(base_url=url, transport=default_transport(), headers=headers) as http:
            n = 0
            while time.monotonic() < stop:
                body = {"text": f"relay bench {word(run)} {word(index)} {word(n)}", "source": "bench"}
                t0 = clock()
                answer = http.post("/v1/alerts", json=body)
                mine.append(clock() - t0)
                if answer.status_code >= 300:
                    raise RuntimeError(f"{answer.status_code}: {answer.text}")
                n += 1
            counts[index] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / SECONDS, [x for per in latencies for x in per]


def main() -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as directory,
        emulator_process() as gateway,
        relay_process(gateway, f"sqlite:///{directory}/relay.db") as relay,
        floor_process() as floor,
    ):
        samples = interleaved(
            {"relay /v1/alerts": lambda: _load(relay), "bare uvicorn endpoint": lambda: _load(floor)}
        )
    header(
        f"Relay intake: {THREADS} client threads, {SECONDS:.0f} s x {ROUNDS} rounds, SQLite store",
        ("min", "median", "p50", "p99", "max"),
    )
    for name, s in samples.items():
        row(name, rate(s.min), rate(s.median), ns(s.pct(50)), ns(s.pct(99)), ns(max(s.latencies_ns)))
    ours, base = samples["relay /v1/alerts"], samples["bare uvicorn endpoint"]
    row(
        "relay / bare endpoint",
        f"{ours.min / base.min:.2f}x",
        f"{ours.median / base.median:.2f}x",
        f"{ours.pct(50) / base.pct(50):.2f}x",
        f"{ours.pct(99) / base.pct(99):.2f}x",
        "",
    )
    return {"relay_accepts_per_s": ours.median, "relay_p99_ms": ours.pct(99) / 1e6}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    else:
        main()
