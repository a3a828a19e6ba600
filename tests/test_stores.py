"""The store contract, the same cases on memory, SQLite and a real Redis server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sslsms_notify.stores import MemoryStore, OutboxItem, OutboxState, open_store
from sslsms_notify.stores.sqlite import SQLiteStore


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path) -> Iterator:
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = SQLiteStore(f"sqlite:///{tmp_path}/state.db")
    else:
        backend = open_store(request.getfixturevalue("redis_url"))
    yield backend
    backend.close()


def item(csms_id: str, now: float, text: str = "hi", **kw) -> OutboxItem:
    return OutboxItem(csms_id, "8801711111111", text, now, now, **kw)


def test_dedup_counts_repeats_and_closes_once(store) -> None:
    assert store.dedup_hit("k", 0.3, "a").first
    assert store.dedup_hit("k", 0.3, "b").suppressed == 1
    assert store.dedup_hit("k", 0.3, "c").suppressed == 2
    assert store.dedup_close(60) == []  # not ended yet
    time.sleep(0.35)
    [closed] = store.dedup_close(60)
    assert (closed.key, closed.suppressed, closed.last_text) == ("k", 2, "c")
    assert store.dedup_close(60) == []  # taken exactly once
    assert not store.dedup_hit("k", 0.3, "d").first  # the storm window goes on


def test_quiet_window_is_forgotten(store) -> None:
    store.dedup_hit("q", 0.1, "a")
    time.sleep(0.15)
    assert store.dedup_close(60) == []
    assert store.dedup_hit("q", 0.1, "a").first


def test_rate_acquire_paces_and_caps(store) -> None:
    assert store.rate_acquire("tps", 10, 1, reserve=True) == 0
    wait = store.rate_acquire("tps", 10, 1, reserve=True)
    assert 0.05 < wait <= 0.1
    for _ in range(3):
        assert store.rate_acquire("cap", 1 / 3600, 3, reserve=False) == 0
    assert store.rate_acquire("cap", 1 / 3600, 3, reserve=False) > 3000


def test_digests(store) -> None:
    assert store.digest_add("8801711111111", "a") == 1
    assert store.digest_add("8801711111111", "b") == 2
    assert store.digest_recipients() == ["8801711111111"]
    assert store.digest_take("8801711111111") == ["a", "b"]
    assert store.digest_recipients() == []


def test_outbox_claim_lease_update(store) -> None:
    now = store.now()
    store.outbox_add([item("a1", now), item("a2", now), item("a3", now + 3600)])
    claimed = store.outbox_claim(10, lease=0.3)
    assert sorted(i.csms_id for i in claimed) == ["a1", "a2"]
    assert all(i.state is OutboxState.INFLIGHT for i in claimed)
    assert store.outbox_claim(10, lease=0.3) == []  # leased
    time.sleep(0.35)
    again = store.outbox_claim(10, lease=30)  # a dead worker's lease expired
    assert sorted(i.csms_id for i in again) == ["a1", "a2"]
    a1, a2 = sorted(again, key=lambda i: i.csms_id)
    store.outbox_update(
        [a1.evolve(state=OutboxState.SENT), a2.evolve(state=OutboxState.DEAD, last_error="Invalid MSISDN")]
    )
    counts = store.outbox_counts()
    assert (counts.pending, counts.inflight, counts.dead) == (1, 0, 1)
    assert store.outbox_open() == 1
    assert [i.csms_id for i in store.outbox_list(OutboxState.DEAD)] == ["a2"]
    assert store.outbox_requeue(["a2", "nope"]) == 1
    assert [i.csms_id for i in store.outbox_claim(10, 30)] == ["a2"]
    assert store.outbox_next_due() is not None
    assert store.outbox_purge(OutboxState.PENDING) == 1  # a3
    assert store.outbox_list(OutboxState.PENDING) == []


def test_outbox_keeps_every_field(store) -> None:
    now = store.now()
    original = item(
        "f1", now, text="বাংলা | x", attempts=2, batch_id="B1", maybe_sent=True, last_error="timeout"
    )
    store.outbox_add([original])
    [claimed] = store.outbox_claim(1, 30)
    assert claimed.evolve(state=OutboxState.PENDING, next_attempt_at=now) == original


def test_sqlite_is_shared_between_connections(tmp_path) -> None:
    one = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    two = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    assert one.dedup_hit("k", 60, "a").first
    assert not two.dedup_hit("k", 60, "a").first
    one.outbox_add([item("x", one.now())])
    assert [i.csms_id for i in two.outbox_claim(5, 30)] == ["x"]
    assert one.outbox_claim(5, 30) == []


def test_store_urls(tmp_path) -> None:
    assert isinstance(open_store("memory"), MemoryStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path}/u.db"), SQLiteStore)
    with pytest.raises(ValueError, match="is not memory, sqlite:///PATH or redis://HOST:PORT/DB"):
        open_store("postgres://x")
    assert "secret" not in repr(open_store("redis://:secret@127.0.0.1:1/0"))
