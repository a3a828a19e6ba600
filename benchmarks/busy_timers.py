"""Timers and first pages on time while the application's threads keep the CPU busy.

An application with 8 CPU-bound threads (pure-Python loops that never sleep) raises
20 distinct alerts for 20 phones (so the account's TPS does not pace them apart),
each once and then once more, on a SQLite store with a 2 s dedup window. Measured at
the emulator (its own process):

- **first page**: from ``alert()`` to the SMS arriving at the gateway;
- **summary**: from the moment the window ends (the intake's decision time plus the
  window) to the "+1 more" summary arriving at the gateway.

Baseline, interleaved round by round: the same run with the application idle. The
busy threads compete with the pipeline's threads for the GIL: every SQLite call and
every socket operation releases it, and getting it back means waiting for a busy
thread's switch interval. Target: p99 of the summary delay under 0.5 s.
"""

from __future__ import annotations

import tempfile
import threading
import time

import httpx

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID

from ._util import ROUNDS, Samples, emulator_process, header, interleaved, row, word

KINDS, BUSY_THREADS, WINDOW = 20, 8, 2.0
_run = iter(range(10**6))


def _busy(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(2_000))


def _round(url: str, directory: str, busy: bool, summaries: Samples) -> tuple[float, list[int]]:
    control = httpx.Client(base_url=url)
    control.post("/__emulator/reset")
    run = next(_run)
    stop = threading.Event()
    count = BUSY_THREADS if busy else 0
    workers = [threading.Thread(target=_busy, args=(stop,), daemon=True) for _ in range(count)]
    for worker in workers:
        worker.start()
    notifier = Notifier(
        GatewayClient(DEMO_API_TOKEN, DEMO_SID, base_url=url),
        groups={f"team{i}": [f"0171{i:07d}"] for i in range(KINDS)},
        store=f"sqlite:///{directory}/busy-{run}.db",
        dedup_window=WINDOW,
        per_recipient_limit=None,
        close_at_exit=None,
    )
    try:
        raised: dict[str, float] = {}
        tickets = []
        for i in range(KINDS):
            text = f"run {word(run)} job {word(i)} failed"
            raised[text] = time.time()
            tickets.append((text, notifier.submit(text, groups=[f"team{i}"])))
            notifier.alert(text, groups=[f"team{i}"])  # a repeat: the window closes with a summary
        wall_minus_perf = time.time() - time.perf_counter_ns() / 1e9
        due = {}
        for text, ticket in tickets:
            ticket.wait(30)
            due[text] = ticket.resolved_ns / 1e9 + wall_minus_perf + WINDOW
        deadline = time.monotonic() + WINDOW + 30
        arrived: dict[str, float] = {}
        summary_at: dict[str, float] = {}
        while time.monotonic() < deadline and len(summary_at) < KINDS:
            for message in control.get("/__emulator/messages").json()["messages"]:
                body = message["text"].split(": ", 1)[-1]
                if body not in raised:
                    continue
                if "more since" in message["text"]:
                    summary_at.setdefault(body, message["received_at"])
                else:
                    arrived.setdefault(body, message["received_at"])
            time.sleep(0.05)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
        notifier.close(5)
        control.close()
    first = [int((arrived[t] - raised[t]) * 1e9) for t in arrived]
    late = [int(max(0.0, summary_at[t] - due[t]) * 1e9) for t in summary_at]
    missing = KINDS - len(late)
    late += [int(30e9)] * missing  # a summary that never came counts as 30 s late
    summaries.latencies_ns.extend(late)
    summaries.rounds.append(sorted(late)[int(0.99 * len(late))])
    return sorted(first)[int(0.99 * len(first))], first


def main() -> dict[str, float]:
    summaries = {"application idle": Samples(), "8 busy threads": Samples()}
    with emulator_process() as url, tempfile.TemporaryDirectory() as directory:
        firsts = interleaved(
            {
                "application idle": lambda: _round(url, directory, False, summaries["application idle"]),
                "8 busy threads": lambda: _round(url, directory, True, summaries["8 busy threads"]),
            }
        )
    header(
        f"timers under busy threads: {KINDS} alerts (+1 repeat each), SQLite, {WINDOW:g} s window, "
        f"x {ROUNDS} rounds",
        ("p50", "p99", "max", "p99 per round"),
    )
    for name in ("application idle", "8 busy threads"):
        for what, samples in (("first page", firsts[name]), ("summary after its due time", summaries[name])):
            per_round = "/".join(f"{r / 1e6:.0f}" for r in samples.rounds)
            row(
                f"{name}: {what}",
                f"{samples.pct(50) / 1e6:.0f} ms",
                f"{samples.pct(99) / 1e6:.0f} ms",
                f"{max(samples.latencies_ns) / 1e6:.0f} ms",
                f"{per_round} ms",
            )
    busy, idle = summaries["8 busy threads"], summaries["application idle"]
    row(
        "busy / idle, summary p99 (target: busy p99 < 500 ms)",
        "",
        f"{busy.pct(99) / max(idle.pct(99), 1e6):.1f}x",
    )
    return {
        "busy_summary_p99_ms": busy.pct(99) / 1e6,
        "idle_summary_p99_ms": idle.pct(99) / 1e6,
        "busy_first_p99_ms": firsts["8 busy threads"].pct(99) / 1e6,
        "idle_first_p99_ms": firsts["application idle"].pct(99) / 1e6,
    }


if __name__ == "__main__":
    main()
