"""The store contract: the same decisions on memory, a real SQLite file and a real Redis server.

The decisions (dedup, caps, digests, group_wait, summaries, eviction) are written
once against a transaction; these cases check that every backend gives them the
same answers, with exact counts. Windows are short and time is real, because
Redis keeps its own clock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator

import pytest

from sslsms_notify.alerting.alert import Severity
from sslsms_notify.alerting.decisions import (
    Hit,
    IdBook,
    Policy,
    apply_intake,
    evict_windows,
    sweep_digests,
    sweep_groups,
    sweep_windows,
    window_key,
)
from sslsms_notify.stores import MemoryStore, OutboxItem, OutboxState, StoreUnavailableError, open_store
from sslsms_notify.stores.redis import RedisStore
from sslsms_notify.stores.sqlite import SQLiteStore

from .conftest import free_port

A, B = "8801711111111", "8801811111111"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path) -> Iterator:
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = SQLiteStore(f"sqlite:///{tmp_path}/state.db")
    else:
        backend = RedisStore(request.getfixturevalue("redis_url"), spool=tmp_path / "spool.db")
    yield backend
    backend.close()


def hit(text: str, numbers=(A,), *, count: int = 1, group: str = "oncall", alert: int = 0) -> Hit:
    key = window_key(group, Severity.ERROR, text)
    return Hit(key, group, tuple(numbers), count, f"[ERROR] {text}", f"[ERROR] {text}", alert)


def intake(store, policy: Policy, *hits: Hit):
    ids = IdBook()
    return store.transact(lambda tx: apply_intake(tx, list(hits), policy, ids))


def sweep(store, policy: Policy, fn=sweep_windows):
    ids = IdBook()
    return store.transact(lambda tx: fn(tx, policy, ids))


def outbox_texts(store) -> list[tuple[str, str]]:
    return sorted((i.msisdn, i.text) for i in store.outbox_list())


NO_CAP = Policy(dedup_window=0.3, repeat_interval=60, cap_limit=None)
#: windows that stay open for the whole test: what must NOT happen yet is checked on these,
#: so a busy machine taking longer between two calls cannot turn "not yet" into "already"
LONG = Policy(dedup_window=60, repeat_interval=60, cap_limit=None)


def test_first_is_sent_repeats_counted_then_one_summary(store) -> None:
    report = intake(store, NO_CAP, hit("disk full", (A, B), count=3))
    assert (report.queued, report.suppressed) == (2, 2)
    report = intake(store, NO_CAP, hit("disk full", (A, B), count=5))
    assert (report.queued, report.suppressed) == (0, 5)
    intake(store, LONG, hit("still open", (A, B), count=2, alert=1))
    time.sleep(0.35)
    report = sweep(store, NO_CAP)
    assert (report.summaries, report.queued) == (1, 2)  # "still open" has 60 s to go
    summaries = [t for _, t in outbox_texts(store) if "more since" in t]
    assert len(summaries) == 2 and all(t.startswith("[ERROR +7 more since ") for t in summaries)
    assert sweep(store, NO_CAP).summaries == 0  # taken exactly once
    report = intake(store, NO_CAP, hit("disk full", (A, B)))
    assert report.suppressed == 1  # the storm window goes on for repeat_interval


def test_quiet_window_is_forgotten_and_pages_again(store) -> None:
    intake(store, NO_CAP, hit("backup failed"))
    time.sleep(0.35)
    report = sweep(store, NO_CAP)
    assert report.summaries == 0 and report.windows_closed == 1
    assert store.window_count() == 0
    assert intake(store, NO_CAP, hit("backup failed")).queued == 1


def test_one_alert_for_two_groups_reaches_a_shared_phone_once(store) -> None:
    report = intake(store, NO_CAP, hit("x", (A, B), group="oncall"), hit("x", (A,), group="dbas"))
    assert report.queued == 2
    assert outbox_texts(store) == [(A, "[ERROR] x"), (B, "[ERROR] x")]


def test_cap_folds_overflow_into_a_digest_sent_before_newer_alerts(store) -> None:
    policy = Policy(dedup_window=60, cap_limit=2, cap_period=2.0)
    for i in range(5):
        intake(store, policy, hit(f"alert {i}", alert=i))
    assert len(store.outbox_list()) == 2  # two of five: the cap's burst
    time.sleep(1.05)  # one slot back (1 s per SMS)
    report = intake(store, policy, hit("alert 5"))
    # The held digest takes the freed slot first, with the new alert folded in.
    assert (report.digests, report.folded) == (1, 4)
    texts = [t for _, t in outbox_texts(store)]
    [digest] = [t for t in texts if t.startswith("[digest:")]
    assert digest.startswith("[digest: 4 held since ")
    assert "[ERROR] alert 2" in digest and "[ERROR] alert 5" in digest


def test_digest_goes_out_when_allowance_returns_without_new_alerts(store) -> None:
    policy = Policy(dedup_window=60, cap_limit=1, cap_period=1.0)
    for i in range(12):
        intake(store, policy, hit(f"alert {i}", alert=i))
    assert sweep(store, policy, sweep_digests).digests == 0
    time.sleep(1.05)
    report = sweep(store, policy, sweep_digests)
    assert (report.digests, report.folded) == (1, 11)
    [digest] = [t for _, t in outbox_texts(store) if t.startswith("[digest")]
    assert digest.startswith("[digest: 11 held since ")
    assert digest.endswith(" more")  # only the first few texts are kept; the count says the rest


def test_group_wait_gathers_distinct_alerts_into_one_sms(store) -> None:
    policy = Policy(dedup_window=60, group_wait=0.2, cap_limit=None)
    report = intake(store, policy, hit("a", alert=0), hit("b", alert=1), hit("a", alert=2))
    assert report.queued == 0 and report.alerts[0].buffered and report.suppressed == 1
    time.sleep(0.25)
    assert sweep(store, policy, sweep_groups).groups == 1
    assert outbox_texts(store) == [(A, "[2 alerts] [ERROR] a | [ERROR] b")]


def test_windows_beyond_max_are_evicted_with_their_summary(store) -> None:
    policy = Policy(dedup_window=60, cap_limit=None, max_windows=3)
    for i in range(5):
        intake(store, policy, hit(f"w{i}", count=2 if i == 0 else 1, alert=i))
    report = sweep(store, policy, evict_windows)
    assert report.evicted == 2 and report.summaries == 1  # w0 held a repeat
    assert store.window_count() == 3
    assert any(t.startswith("[ERROR +1 more since") and "w0" in t for _, t in outbox_texts(store))


def test_outbox_claim_lease_renew_update_and_counts(store) -> None:
    now = store.now()
    store.outbox_add([OutboxItem(f"id{i}", A, f"t{i}", now + i * 0.001, now) for i in range(5)])
    assert store.outbox_counts().pending == 5 and store.outbox_open() == 5
    claimed = store.outbox_claim(3, 1.0)
    assert [i.csms_id for i in claimed] == ["id0", "id1", "id2"]
    assert all(i.state is OutboxState.INFLIGHT for i in claimed)
    assert [i.csms_id for i in store.outbox_claim(10, 1.0)] == ["id3", "id4"]
    assert store.outbox_claim(10, 1.0) == []  # all leased
    store.outbox_renew(["id0"], 5.0)
    time.sleep(1.05)  # the other leases run out: a dead process's SMS are taken over
    assert sorted(i.csms_id for i in store.outbox_claim(10, 5)) == ["id1", "id2", "id3", "id4"]
    store.outbox_update([claimed[0].evolve(state=OutboxState.SENT)])
    store.outbox_update([claimed[1].evolve(state=OutboxState.DEAD, last_error="INVALID")])
    store.outbox_update([claimed[2].evolve(state=OutboxState.PENDING, next_attempt_at=now + 100)])
    counts = store.outbox_counts()
    assert (counts.pending, counts.dead) == (3, 1)
    found = store.outbox_get(["id0", "id1", "id2", "nope"])
    assert set(found) == {"id1", "id2"}  # a sent SMS leaves the outbox
    assert found["id1"].state is OutboxState.DEAD and found["id1"].last_error == "INVALID"
    assert store.outbox_requeue(["id1"]) == 1
    assert store.outbox_counts().dead == 0 and store.outbox_open() == 4


def test_outbox_keeps_every_field(store) -> None:
    now = store.now()
    original = OutboxItem(
        "keep", A, "সার্ভার ডাউন", now, now, attempts=2, batch_id="b1", last_error="x", maybe_sent=True
    )
    store.outbox_add([original])
    [claimed] = store.outbox_claim(1, 5)
    assert claimed.evolve(state=OutboxState.PENDING, next_attempt_at=now) == original


def test_outbox_trim_drops_the_oldest_pending_and_dead_letters_expire(store) -> None:
    now = store.now()
    store.outbox_add([OutboxItem(f"o{i}", A, "t", now + i, now + i * 0.001) for i in range(6)])
    store.outbox_claim(1, 60)  # o0 is in flight: never dropped under a dispatcher's feet
    dropped = store.outbox_trim(4, "dropped: outbox full")
    assert sorted(i.csms_id for i in dropped) == ["o1", "o2"]
    counts = store.outbox_counts()
    assert (counts.pending, counts.dead) == (4, 2)
    assert store.outbox_expire_dead(store.now() - 3600) == 0
    assert store.outbox_expire_dead(store.now() + 1) == 2
    assert store.outbox_counts().dead == 0


def test_rate_acquire_paces_and_caps(store) -> None:
    started = time.monotonic()
    assert store.rate_acquire("tps", 10, 1, reserve=True) == 0
    wait = store.rate_acquire("tps", 10, 1, reserve=True)
    between = time.monotonic() - started  # at least the time between the two reservations
    assert max(0.0, 0.1 - between) - 0.005 <= wait <= 0.1
    for _ in range(3):
        assert store.rate_acquire("cap", 1 / 3600, 3, reserve=False) == 0
    assert store.rate_acquire("cap", 1 / 3600, 3, reserve=False) > 3000


def test_concurrent_intakes_agree_on_the_first(store) -> None:
    """Eight threads report the same new alert at once: one SMS, seven repeats."""
    policy = Policy(dedup_window=60, cap_limit=None)
    barrier = threading.Barrier(8)
    reports = []

    def report_it() -> None:
        barrier.wait()
        reports.append(intake(store, policy, hit("race")))

    threads = [threading.Thread(target=report_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.queued for r in reports) == 1
    assert sum(r.suppressed for r in reports) == 7


def test_sqlite_is_shared_between_processes_files(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    one, two = SQLiteStore(url), SQLiteStore(url)
    assert intake(one, NO_CAP, hit("shared")).queued == 1
    assert intake(two, NO_CAP, hit("shared")).suppressed == 1
    assert two.outbox_counts().pending == 1 and two.window_count() == 1


def test_sqlite_opens_a_0_1_0_state_file_keeping_its_outbox(tmp_path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE windows (key TEXT PRIMARY KEY, end_at REAL NOT NULL, suppressed INTEGER NOT NULL,
            last_at REAL NOT NULL, last_text TEXT NOT NULL);
        CREATE TABLE digests (id INTEGER PRIMARY KEY AUTOINCREMENT, msisdn TEXT NOT NULL, text TEXT NOT NULL);
        CREATE TABLE outbox (csms_id TEXT PRIMARY KEY, msisdn TEXT NOT NULL, text TEXT NOT NULL,
            created_at REAL NOT NULL, next_attempt_at REAL NOT NULL, attempts INTEGER NOT NULL,
            state TEXT NOT NULL, batch_id TEXT, last_error TEXT NOT NULL, maybe_sent INTEGER NOT NULL);
        INSERT INTO windows VALUES ('k', 1, 3, 1, 'x');
        INSERT INTO digests (msisdn, text) VALUES ('8801711111111', 'held one');
        INSERT INTO digests (msisdn, text) VALUES ('8801711111111', 'held two');
        INSERT INTO outbox VALUES ('left1', '8801711111111', 'left behind', 1, 1, 0, 'pending', NULL, '', 0);
        """
    )
    db.close()
    store = SQLiteStore(path)
    assert [i.csms_id for i in store.outbox_list()] == ["left1"]
    assert store.outbox_counts().pending == 1 and store.window_count() == 0
    report = sweep(store, Policy(cap_limit=None), sweep_digests)
    assert report.digests == 1 and report.folded == 2
    store.close()
    assert SQLiteStore(path).outbox_counts().pending == 2  # opening again changes nothing


def test_unopenable_sqlite_path_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailableError, match=r"sqlite:///.*file/state.db: cannot open"):
        open_store(f"sqlite:///{blocker}/state.db")


def test_unknown_store_url_names_the_rule() -> None:
    rule = r"must be memory, sqlite:///PATH, redis://HOST:PORT/DB or redis\+sentinel://"
    with pytest.raises(ValueError, match=rf"store='foo://bar': {rule}"):
        open_store("foo://bar")


def test_redis_down_spools_to_sqlite_then_moves_back_with_the_same_ids(tmp_path, redis_server) -> None:
    from .conftest import RedisProcess

    port = free_port()
    down = RedisStore(f"redis://127.0.0.1:{port}/0", spool=tmp_path / "spool.db")
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        down.check()
    report = intake(down, NO_CAP, hit("while redis is down", (A, B)))
    assert report.queued == 2 and down.degraded
    ids = sorted(report.alerts[0].csms_ids)
    down.close()

    # A new process finds the spooled SMS (durable, not process memory).
    redis_proc = RedisProcess(tmp_path)
    redis_proc.port = port
    redis_proc.start()
    try:
        back = RedisStore(redis_proc.url, spool=tmp_path / "spool.db")
        assert back.outbox_open() == 2
        assert back.move_spool() == 2
        assert sorted(i.csms_id for i in back.outbox_claim(10, 5)) == ids
        assert back._spool is not None and back._spool.outbox_open() == 0
        back.close()
    finally:
        redis_proc.kill()


def test_resume_makes_backed_off_pending_due_but_leaves_leases(store) -> None:
    now = store.now()
    store.outbox_add([OutboxItem(f"r{i}", A, "t", now, now + 3600) for i in range(3)])
    store.outbox_add([OutboxItem("leased", A, "t", now, now)])
    [leased] = store.outbox_claim(10, 60)
    assert leased.csms_id == "leased" and store.outbox_claim(10, 60) == []
    assert store.outbox_resume() == 3
    assert sorted(i.csms_id for i in store.outbox_claim(10, 60)) == ["r0", "r1", "r2"]  # not "leased"


def test_redis_configuration_errors_are_not_outages(redis_server, tmp_path) -> None:
    """A wrong database number fails at once, naming the store; an unreachable server spools."""
    bad_db = redis_server.url.rsplit("/", 1)[0] + "/99"
    with pytest.raises(StoreUnavailableError, match=r"redis://127\.0\.0\.1:\d+/99: DB index is out of range"):
        RedisStore(bad_db, spool=tmp_path / "spool.db")
    nobody = RedisStore(f"redis://:secret-pw@127.0.0.1:{free_port()}/0", spool=tmp_path / "spool2.db")
    assert "secret-pw" not in repr(nobody)
    nobody.close()


# -- bound requests: their members move together ------------------------------------------
def _bound(store, prefix: str, count: int, *, due_in: tuple[float, ...] = ()) -> list[OutboxItem]:
    now = store.now()
    due = [*due_in, *([0.0] * count)]
    items = [
        OutboxItem(f"{prefix}{i}", f"88017111111{i:02d}", "t", now, now + due[i]).bind(
            f"{prefix}-batch", "bulk", count
        )
        for i in range(count)
    ]
    store.outbox_add(items)
    return items


def test_a_bound_request_is_claimed_whole_past_the_limit_and_due_or_not(store) -> None:
    store.outbox_add([OutboxItem("loose", B, "t", store.now() - 1, store.now() - 1)])
    _bound(store, "b", 3, due_in=(0, 60, 60))
    claimed = store.outbox_claim(2, 30)
    assert sorted(i.csms_id for i in claimed) == ["b0", "b1", "b2", "loose"]
    assert {i.batch_size for i in claimed if i.batch_id} == {3}


def test_a_lease_taken_over_comes_back_as_maybe_sent(store) -> None:
    store.outbox_add([OutboxItem("x", A, "t", store.now(), store.now())])
    [first] = store.outbox_claim(10, 0.2)
    assert not first.maybe_sent
    time.sleep(0.3)  # its owner died mid-request: the gateway may have it
    [again] = store.outbox_claim(10, 30)
    assert again.csms_id == "x" and again.maybe_sent


def test_trim_and_requeue_take_a_bound_request_whole(store) -> None:
    now = store.now()
    store.outbox_add([OutboxItem(f"o{i}", A, "t", now + 1 + i, now + 200) for i in range(3)])
    members = _bound(store, "t", 2, due_in=(100, 100))  # oldest, and first due (Redis's order)
    dropped = store.outbox_trim(4, "dropped: outbox full")  # one too many: the oldest is a bound pair
    assert sorted(i.csms_id for i in dropped) == ["t0", "t1"]
    assert store.outbox_counts().dead == 2
    assert store.outbox_requeue([members[0].csms_id]) == 2  # the other member comes back with it
    assert store.outbox_counts().dead == 0
