"""Flat cost under storms and scale, pinned with counts (the timings live in benchmarks/)."""

from __future__ import annotations

import re
import threading

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator
from sslsms_notify.stores import MemoryStore, OutboxState

from .conftest import FAST_RETRY, Clock

PHONE = "01711111111"
_MORE = re.compile(r"\+(\d+) more since")


def client(emulator: GatewayEmulator) -> GatewayClient:
    return GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator), retry=FAST_RETRY)


def test_default_size_storm_drops_nothing_and_counts_every_repeat(emulator) -> None:
    """100,000 alerts from 8 threads, 20 kinds: the default queue takes them all, and the
    summaries on the phone add up to every repeat (99,980)."""
    n = Notifier(
        client(emulator),
        recipients=[PHONE, "01811111111"],
        per_recipient_limit=None,
        dispatch=DispatchPolicy(tps=1000),
        close_at_exit=None,
    )
    kinds = "abcdefghijklmnopqrst"

    def produce(worker: int) -> None:
        for i in range(12_500):
            n.alert(f"storm kind {kinds[(worker + i) % 20]}", source="app")

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert n.close(30)
    stats = n.stats()
    assert stats["received"] == 100_000 and stats["dropped"] == 0
    assert stats["suppressed"] == 99_980
    texts = [m.text for m in emulator.messages(PHONE)]
    firsts = [t for t in texts if "more since" not in t]
    assert len(firsts) == 20
    assert sum(int(m.group(1)) for t in texts if (m := _MORE.search(t))) == 99_980


def test_digest_goes_out_when_allowance_returns_even_under_steady_load(emulator) -> None:
    """Cap 2 an hour; a new alert every 10 minutes for 6 hours. Each freed slot goes to the
    held digest (with the newest alerts folded in), never to a newer alert first."""
    clock = Clock()
    n = Notifier(
        client(emulator),
        recipients=[PHONE],
        per_recipient_limit=2,
        per_recipient_period=3600,
        store=MemoryStore(clock=clock),
        clock=clock,
        start=False,
        dispatch=DispatchPolicy(tps=1000),
        close_at_exit=None,
    )
    for i in range(36):
        n.alert(f"steady alert {'abcdefghijklmnopqrstuvwxyz'[i % 26]}{'abcdefghij'[i // 26]}")
        n.flush(1)
        clock.advance(600)
    texts = [m.text for m in emulator.messages(PHONE)]
    digests = [t for t in texts if t.startswith("[digest:")]
    assert len(texts) - len(digests) == 2  # the cap's burst; every later slot went to a digest
    assert len(digests) == 11  # a slot comes back every 30 minutes: 11 in the 5.5 hours after the burst
    sent_in_digests = sum(int(re.match(r"\[digest: (\d+) held", t).group(1)) for t in digests)  # type: ignore[union-attr]
    still_held = n.store.transact(lambda tx: tx.digests.get(n.router.numbers("default")[0]))
    stats = n.stats()
    assert stats["throttled"] == 34 and stats["folded"] == sent_in_digests == 32
    assert still_held is not None and still_held.count == 2  # the last two wait for the next slot
    n.close(0)


def test_windows_are_bounded_and_evictions_counted_with_their_summary(emulator) -> None:
    n = Notifier(
        client(emulator),
        recipients=[PHONE],
        per_recipient_limit=None,
        max_windows=100,
        start=False,
        dispatch=DispatchPolicy(tps=1000),
        close_at_exit=None,
    )
    words = [f"{a}{b}" for a in "abcdefghijklmnopq" for b in "abcdefghijklmnop"][:250]
    n.alert("the first one repeats")
    n.alert("the first one repeats")
    for w in words:
        n.alert(f"distinct alert {w}")
        n.tick()
    n.flush(5)
    stats = n.stats()
    assert stats["windows"] == 100 and stats["evicted"] == 151
    summary = [m.text for m in emulator.messages(PHONE) if "more since" in m.text]
    assert len(summary) == 1 and "the first one repeats" in summary[0]  # its repeat was not lost
    n.close(0)


def test_outbox_is_bounded_oldest_pending_become_dead_letters() -> None:
    """The gateway is down; 200 distinct SMS for a 50-SMS outbox: the 150 oldest pending
    become dead letters ('dropped: outbox full'), counted; none vanishes without a trace."""
    emulator = GatewayEmulator()
    emulator.faults.outage(3600, mode="drop")
    n = Notifier(
        client(emulator),
        recipients=[PHONE],
        per_recipient_limit=None,
        dedup_window=0,
        max_pending=50,
        start=False,
        dispatch=DispatchPolicy(tps=1000),
        close_at_exit=None,
    )
    for i in range(200):
        n.alert(f"during the outage {i}")
    n.tick(force_sweep=True)
    stats = n.stats()
    assert stats["pending"] == 50 and stats["dead"] == 150 and stats["outbox_dropped"] == 150
    dead = n.store.outbox_list(OutboxState.DEAD, limit=1000)
    assert {i.last_error for i in dead} == {"dropped: outbox full"}
    kept = sorted(int(i.text.rsplit(" ", 1)[1]) for i in n.store.outbox_list(OutboxState.PENDING, 1000))
    assert kept == list(range(150, 200))  # the newest are kept
    n.close(0)


def test_dead_letters_expire_after_their_retention() -> None:
    """A dead letter is kept for `outbox list` / `outbox retry`, then forgotten (dead_retention)."""
    clock = Clock()
    emulator = GatewayEmulator()
    emulator.config.blocked_msisdns.add("8801711111111")
    n = Notifier(
        client(emulator),
        recipients=[PHONE],
        per_recipient_limit=None,
        store=MemoryStore(clock=clock),
        clock=clock,
        dead_retention=3600,
        start=False,
        dispatch=DispatchPolicy(tps=1000),
        close_at_exit=None,
    )
    n.alert("to a blocked number")
    n.flush(1)
    assert n.stats()["dead"] == 1
    clock.advance(3599)
    n.tick(force_sweep=True)
    assert n.stats()["dead"] == 1
    clock.advance(2)
    n.tick(force_sweep=True)
    assert n.stats()["dead"] == 0
    n.close(0)
