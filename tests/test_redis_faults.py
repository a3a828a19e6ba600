"""Redis misbehaving: out of memory, a read-only replica, a restart that lost the data.

Real parts only: redis-server processes started here (with ``maxmemory``, AOF, RDB,
replication), the emulator over HTTP, real Notifiers. Every end-to-end case counts
what the phones got at the emulator: each SMS exactly once, or the loss counted.

The first cases pin down what Redis itself does (the store's design relies on it):
a write Redis refuses is not applied at all, in a MULTI or in a script.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sslsms_notify import GatewayClient, Notifier, RetryPolicy
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.alerting.decisions import IdBook, Policy, apply_intake, sweep_windows
from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.stores import OutboxItem, OutboxState
from sslsms_notify.stores import redis as redis_store
from sslsms_notify.stores.base import Digest, GroupBuffer, Window
from sslsms_notify.stores.redis import (
    OUT_OF_MEMORY,
    READ_ONLY,
    UNREACHABLE,
    RedisStore,
    describe_persistence,
    fault_of,
    merge_digest,
    merge_group,
    merge_rate,
    merge_window,
)

from .conftest import RedisProcess
from .test_stores import hit, intake

pytestmark = pytest.mark.slow
A = "8801711111111"
QUICK = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05, total_timeout=2)
FAST = DispatchPolicy(tps=500, backoff=0.1, max_backoff=0.5, lease=3)
NO_CAP = Policy(dedup_window=300, repeat_interval=300, cap_limit=None)


class Server(RedisProcess):
    """A redis-server with settings of its own (maxmemory, AOF, RDB, replication...)."""

    def __init__(self, directory: Path, *settings: str, port: int | None = None) -> None:
        super().__init__(directory)
        self.settings = list(settings)
        if port is not None:
            self.port = port

    def start(self) -> Server:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.settings,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):  # not "-LOADING": the data is in
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def restart(self) -> None:
        """Killed (SIGKILL: no shutdown save) and started again on the same port."""
        self.kill()
        self.start()

    def client(self) -> Any:
        return redis.Redis(port=self.port, decode_responses=True)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start Redis servers with settings; every one is killed at the end."""
    started: list[Server] = []

    def start(*settings: str, name: str = "redis") -> Server:
        server = Server(tmp_path / f"{name}-{len(started)}", *settings)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()


def fill_to_maxmemory(server: Server, headroom: int = 0) -> None:
    """``maxmemory`` (noeviction) set to what Redis uses now plus ``headroom`` bytes.

    Without headroom, well below what it uses: full from the next write on, whatever
    a client buffer freed meanwhile.
    """
    client = server.client()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", used + headroom if headroom else used // 2)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis is tried again 0.3 s after it failed (3 s in production), and refused writes are
    logged as over after 0.5 s of writes taken (30 s), to keep tests short."""
    monkeypatch.setattr(redis_store, "RETRY_REDIS_AFTER", 0.3)
    monkeypatch.setattr(redis_store, "WRITES_BACK_QUIET", 0.5)


def item(csms_id: str, now: float, **changes: Any) -> OutboxItem:
    return OutboxItem(csms_id, A, f"text {csms_id}", now, now).evolve(**changes)


# -- what Redis does: a refused write is not applied at all --------------------------------
def test_out_of_memory_refuses_a_whole_multi_and_a_script_before_it_writes(servers) -> None:
    server = servers()
    client = server.client()
    client.set("kept", "1")
    fill_to_maxmemory(server)
    pipe = client.pipeline()  # MULTI/EXEC
    pipe.delete("kept")  # not a write that needs memory: refused all the same inside MULTI
    pipe.set("new", "1")
    with pytest.raises(redis.ResponseError) as refused:
        pipe.execute()
    assert fault_of(refused.value) == OUT_OF_MEMORY
    assert client.get("kept") == "1" and client.get("new") is None  # EXECABORT: nothing applied

    # A script is refused at its first write that needs memory, before it changed anything...
    script = client.register_script("redis.call('SET', KEYS[1], 'x') redis.call('DEL', KEYS[2]) return 1")
    with pytest.raises(redis.ResponseError) as refused:
        script(keys=["new", "kept"])
    assert fault_of(refused.value) == OUT_OF_MEMORY
    assert client.get("kept") == "1" and client.get("new") is None
    # ... reads still work, and a script flagged allow-oom runs (Redis 7+): how SMS drain
    assert client.get("kept") == "1"
    flagged = client.register_script("#!lua flags=allow-oom\nreturn redis.call('DEL', KEYS[1])")
    assert flagged(keys=["kept"]) == 1


def test_a_read_only_replica_refuses_a_whole_multi_and_scripts(servers) -> None:
    master = servers(name="master")
    replica = servers("--replicaof", "127.0.0.1", str(master.port), name="replica")
    master.client().set("kept", "1")
    client = replica.client()
    wait_for(lambda: client.get("kept") == "1", what="replication")
    pipe = client.pipeline()
    pipe.get("kept")
    pipe.set("new", "1")
    with pytest.raises(redis.ResponseError) as refused:
        pipe.execute()
    assert fault_of(refused.value) == READ_ONLY
    script = client.register_script("#!lua flags=allow-oom\nredis.call('DEL', KEYS[1]) return 1")
    with pytest.raises(redis.ResponseError) as refused:
        script(keys=["kept"])
    assert fault_of(refused.value) == READ_ONLY
    assert client.get("kept") == "1" and client.get("new") is None


def test_faults_are_told_apart_by_what_redis_says() -> None:
    assert fault_of(redis.ConnectionError("refused")) == UNREACHABLE
    assert fault_of(redis.exceptions.BusyLoadingError("loading")) == UNREACHABLE
    # Redis 6 wraps a script's error; MISCONF and NOREPLICAS have no redis-py class
    wrapped = "Error running script (call to f_1): @user_script:1: -OOM command not allowed when used memory"
    assert fault_of(redis.ResponseError(wrapped)) == OUT_OF_MEMORY
    assert (
        fault_of(redis.ResponseError("MISCONF Redis is configured to save RDB snapshots")) == "cannot persist"
    )
    assert fault_of(redis.ResponseError("NOREPLICAS Not enough good replicas")) == "not enough replicas"
    assert fault_of(redis.ResponseError("WRONGTYPE Operation against a key")) is None  # a bug: raised
    piped = (
        "Command # 1 (ZADD w 1 -OOM: MISCONF) of pipeline caused error: NOREPLICAS Not enough good replicas"
    )
    assert fault_of(redis.ResponseError(piped)) == "not enough replicas"  # what Redis said, not the text
    alert_text = (
        "Command # 1 (SET k -OOM of pipeline caused error: READONLY) of pipeline caused error: WRONGTYPE x"
    )
    assert fault_of(redis.ResponseError(alert_text)) is None
    assert fault_of(redis.WatchError("conflict")) is None


# -- the store, out of memory ---------------------------------------------------------------
def test_out_of_memory_new_state_goes_to_the_spool_while_redis_sms_drain(servers, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sslsms_notify")
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    try:
        now = store.now()
        store.outbox_add([item(f"r{i}", now) for i in range(4)])
        fill_to_maxmemory(server)
        report = intake(store, NO_CAP, hit("while redis is full"))
        assert report.queued == 1 and store.degraded
        assert store.spool().outbox_open() == 1 and store.spool().window_count() == 1
        assert server.client().zcard("sslsms:due") == 4  # Redis unchanged by the refused commit

        # The SMS Redis holds are still claimed and settled there (allow-oom scripts).
        claimed = wait_for(lambda: store.outbox_claim(10, 30), what="a claim")
        claimed += store.outbox_claim(10, 30)
        assert sorted(i.csms_id for i in claimed) == sorted(
            [*(f"r{i}" for i in range(4)), report.alerts[0].csms_ids[0]]
        )
        store.outbox_update([i.evolve(state=OutboxState.SENT) for i in claimed])
        assert store.outbox_open() == 0 and server.client().hlen("sslsms:o") == 0
        full = [r for r in caplog.records if "out of memory" in r.getMessage()]
        assert len(full) == 1 and full[0].levelno == logging.ERROR

        # Memory back: writes go to Redis again, spooled windows move there.
        server.client().config_set("maxmemory", 0)
        wait_for(lambda: (store.move_spool(), not store.degraded)[1], what="writes taken again")
        assert store.spool().window_count() == 0 and store.window_count() == 1

        def back() -> bool:  # said once writes have been taken for a while (0.5 s here)
            intake(store, NO_CAP, hit("while redis is full"))  # a repeat: a write
            return any("Redis takes writes again" in r.getMessage() for r in caplog.records)

        wait_for(back, what="the end of the refusal to be logged")
    finally:
        store.close()


@pytest.mark.parametrize("refusal", ["cannot persist", "not enough replicas"])
def test_misconf_and_noreplicas_new_state_spools_and_redis_sms_wait(
    sslsms_gateway, servers, tmp_path, caplog, refusal
) -> None:
    """Redis refuses every write: new alerts go out from the spool; what Redis holds waits (counted)."""
    caplog.set_level(logging.INFO, logger="sslsms_notify")
    if refusal == "cannot persist":
        server = servers("--save", "3600 1")
    else:
        server = servers("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    try:
        if refusal == "cannot persist":
            now = store.now()
            store.outbox_add([item(f"w{i}", now) for i in range(3)])
            shutil.rmtree(server.directory)  # the next snapshot fails: Redis refuses writes (MISCONF)
            server.client().bgsave()
            wait_for(
                lambda: server.client().info("persistence")["rdb_last_bgsave_status"] == "err", what="MISCONF"
            )
            held = 3
        else:
            held = 0  # it never took a write
        report = intake(store, NO_CAP, hit("while redis refuses writes"))
        assert report.queued == 1 and store.fault == refusal
        claimed = store.outbox_claim(10, 30) + store.outbox_claim(10, 30)
        assert [i.csms_id for i in claimed] == report.alerts[0].csms_ids  # from the spool only
        store.outbox_update([i.evolve(state=OutboxState.SENT) for i in claimed])
        assert store.outbox_open() == held  # still pending in Redis
        n = Notifier(client_for(sslsms_gateway), recipients=[A], store=store, start=False, close_at_exit=None)
        try:
            assert n.flush(0.5) is (held == 0)  # they wait, and flush() says so
        finally:
            n.close(0)
        assert len(sslsms_gateway.emulator.messages()) == 0
        lines = [
            r for r in caplog.records if refusal in r.getMessage() and "refuses writes" in r.getMessage()
        ]
        assert len(lines) == 1 and lines[0].levelno == logging.ERROR
    finally:
        store.close()


def test_a_redis_at_the_edge_of_maxmemory_is_logged_once_not_per_flap(servers, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sslsms_notify")
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    client = server.client()
    try:
        for flap in range(3):  # full, then room for a write, three times
            fill_to_maxmemory(server)
            assert intake(store, NO_CAP, hit(f"full {flap}")).queued == 1 and store.fault == OUT_OF_MEMORY
            client.config_set("maxmemory", 0)
            wait_for(lambda flap=flap: intake(store, NO_CAP, hit(f"room {flap}")) and not store.degraded)
        said = [
            r.getMessage()
            for r in caplog.records
            if "Redis " in r.getMessage() and "restart" not in r.getMessage()
        ]
        assert sum("out of memory" in s for s in said) == 1 and not any(
            "takes writes again" in s for s in said
        )
        time.sleep(0.5)  # past WRITES_BACK_QUIET (0.5 s here): the next write says it is over
        intake(store, NO_CAP, hit("after"))
        said = [r.getMessage() for r in caplog.records if "takes writes again" in r.getMessage()]
        assert len(said) == 1
    finally:
        store.close()


# -- the store, a restart that lost the data -------------------------------------------------
def test_a_restart_without_persistence_is_noticed_and_pending_sms_readded(servers, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sslsms_notify")
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    try:
        now = store.now()
        store.outbox_add([item(f"p{i}", now) for i in range(6)])
        store.outbox_add(
            [item(f"b{i}", now, next_attempt_at=now + 600).bind("bulk-1", "bulk", 2) for i in range(2)]
        )
        assert [i.csms_id for i in store.outbox_claim(2, 60)] == ["p0", "p1"]
        store.outbox_update([store.outbox_get(["p1"])["p1"].evolve(state=OutboxState.SENT)])
        store.outbox_update([store.outbox_get(["p5"])["p5"].evolve(state=OutboxState.DEAD)])
        assert store.move_spool() == 0 and store.counters()["data_lost"] == 0

        server.restart()  # no persistence: Redis comes back empty
        expected = {"p0", "p2", "p3", "p4", "b0", "b1"}  # not the sent one, nor the dead letter
        assert wait_for(store.move_spool, what="the loss to be noticed") == len(expected)
        assert store.counters() == {
            "data_lost": 1,
            "readded": len(expected),
            "journal_dropped": 0,
            "rows_moved": 0,
            "journal": len(expected),
            "replica_waits": 0,  # a master alone: nobody to wait for
            "replica_timeouts": 0,
        }
        back = store.outbox_get(sorted(expected))
        assert set(back) == expected and all(i.maybe_sent for i in back.values())
        assert back["p0"].state is OutboxState.INFLIGHT  # still ours, under its lease
        assert {k: i.batch_id for k, i in back.items() if k.startswith("b")} == {
            "b0": "bulk-1",
            "b1": "bulk-1",
        }
        assert store.outbox_counts().pending == len(expected)
        lines = [r for r in caplog.records if "Redis lost its data" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.ERROR
        assert store.move_spool() == 0  # noticed once
    finally:
        store.close()


def test_a_restart_onto_an_older_snapshot_is_noticed(servers, tmp_path) -> None:
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    try:
        now = store.now()
        store.outbox_add([item(f"old{i}", now) for i in range(3)])
        store.move_spool()
        server.client().save()  # an RDB snapshot: the marker and three SMS
        store.outbox_add([item(f"new{i}", now) for i in range(4)])
        store.move_spool()  # the marker's counter goes on past the snapshot's
        server.restart()  # loads dump.rdb: the marker's token is there, its counter went back
        assert wait_for(store.move_spool, what="the loss to be noticed") == 4
        assert store.outbox_open() == 7 and store.counters()["data_lost"] == 1
    finally:
        store.close()


def test_a_restart_with_aof_loses_nothing_and_raises_no_alarm(servers, tmp_path) -> None:
    server = servers("--appendonly", "yes", "--appendfsync", "always")
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    try:
        now = store.now()
        store.outbox_add([item(f"a{i}", now) for i in range(5)])
        store.move_spool()
        server.restart()
        wait_for(lambda: store.outbox_open() == 5, what="Redis to answer")
        for _ in range(3):
            store.move_spool()
        assert store.counters()["data_lost"] == 0 and store.outbox_open() == 5
    finally:
        store.close()


# -- what a restart would lose: one line at start ------------------------------------------
@pytest.mark.parametrize(
    ("settings", "level", "says"),
    [
        (
            (),
            logging.WARNING,
            "Redis does not persist (no AOF, no RDB snapshots): a restart loses everything",
        ),
        (
            ("--appendonly", "yes"),
            logging.INFO,
            "Redis persists with AOF (appendfsync everysec): a restart loses at most about the last second",
        ),
        (
            ("--appendonly", "yes", "--appendfsync", "always"),
            logging.INFO,
            "Redis persists with AOF (appendfsync always): a restart loses no write it acknowledged",
        ),
        (
            ("--appendonly", "yes", "--appendfsync", "no"),
            logging.WARNING,
            "Redis persists with AOF (appendfsync no): a restart loses the writes the OS had not flushed",
        ),
        (
            ("--save", "900 1 60 100"),
            logging.WARNING,
            "Redis persists with RDB snapshots only (save 900 1 60 100): a restart loses the writes "
            "since the last snapshot (up to 900 s)",
        ),
        (
            ("--rename-command", "CONFIG", ""),
            logging.WARNING,
            "its RDB snapshots are unknown (CONFIG not allowed)",
        ),
        (
            ("--appendonly", "yes", "--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"),
            logging.WARNING,
            "maxmemory-policy allkeys-lru: when full, Redis may evict pending SMS (use noeviction)",
        ),
    ],
)
def test_at_start_one_line_says_what_a_restart_would_lose(
    servers, tmp_path, caplog, settings, level, says
) -> None:
    caplog.set_level(logging.INFO, logger="sslsms_notify")
    server = servers(*settings)
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    store.close()
    lines = [
        r for r in caplog.records if r.getMessage().count("Redis ") and "restart loses" in r.getMessage()
    ]
    assert len(lines) == 1 and lines[0].levelno == level
    assert says in lines[0].getMessage() and store.persistence is not None and says in store.persistence


def test_a_replica_at_start_is_named() -> None:
    line, warn = describe_persistence({"aof_enabled": 1, "role": "slave"}, {"appendonly": "yes"})
    assert warn and "read-only replica" in line


# -- windows opened in the spool move back to Redis ----------------------------------------
def window(key: str, since: float, count: int, end: float, numbers=(A,), last: float | None = None) -> Window:
    return Window(
        key, end, count, since, last if last is not None else since, f"text {since}", tuple(numbers)
    )


def test_merging_a_window_keeps_the_earlier_start_and_sums_the_repeats() -> None:
    now = 1000.0
    shared = window("k", 900, 2, 1200, last=950)
    spooled = window("k", 960, 3, 1260, numbers=(A, "8801811111111"), last=990)
    merged = merge_window(shared, spooled, now)
    assert merged == Window("k", 1200, 5, 900, 990, "text 960", (A, "8801811111111"))
    assert merge_window(None, spooled, now) == spooled
    assert merge_window(window("k", 100, 0, 400), spooled, now) == spooled  # a quiet ended window is none
    assert merge_window(shared, window("k", 100, 0, 400), now) is None  # nothing to move


def test_merging_digests_groups_and_caps() -> None:
    shared = Digest(A, 2, 100.0, ("a", "b"), 500.0)
    spooled = Digest(A, 3, 50.0, ("c", "d", "e"), 400.0)
    assert merge_digest(shared, spooled, keep=4) == Digest(A, 5, 50.0, ("c", "d", "e", "a"), 400.0)
    group = GroupBuffer("ops", 300.0, 2, ("x", "y"), (A,))
    other = GroupBuffer("ops", 250.0, 1, ("z",), ("8801811111111",))
    assert merge_group(group, other, keep=20) == GroupBuffer(
        "ops", 250.0, 3, ("x", "y", "z"), (A, "8801811111111")
    )
    # a GCRA meter: what both sides booked beyond now adds up
    assert merge_rate(1010.0, 1020.0, 1000.0) == 1030.0
    assert merge_rate(None, 1020.0, 1000.0) == 1020.0
    assert merge_rate(1010.0, 990.0, 1000.0) is None


def test_windows_on_both_sides_are_merged_into_redis(servers, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sslsms_notify")
    server = servers("--appendonly", "yes", "--appendfsync", "always")  # SIGKILL loses nothing
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    try:
        assert intake(store, NO_CAP, hit("disk full", count=3)).queued == 1  # in Redis: 2 repeats
        server.kill()
        report = intake(store, NO_CAP, hit("disk full", count=4), hit("cpu hot", alert=1))  # in the spool
        assert report.queued == 2 and store.spool().window_count() == 2
        server.start()
        wait_for(lambda: (store.move_spool(), store.spool().window_count() == 0)[1], what="windows moved")
        assert store.window_count() == 2 and store.counters()["rows_moved"] == 2
        said = [(r.levelno, r.getMessage()) for r in caplog.records if "Redis " in r.getMessage()]
        assert [level for level, text in said if "Redis unreachable" in text] == [logging.ERROR]
        assert [level for level, text in said if "Redis reachable again" in text] == [logging.WARNING]
        ids = IdBook()
        windows = store.transact(lambda tx: {k: tx.windows.get(k) for k in tx.earliest("windows", 10)})
        disk = next(w for w in windows.values() if w and "disk full" in w.key)
        assert disk.count == 2 + 3  # both sides' repeats, reported in one summary
        assert store.transact(lambda tx: apply_intake(tx, [hit("cpu hot")], NO_CAP, ids)).queued == 0
        assert store.transact(lambda tx: sweep_windows(tx, NO_CAP, ids)).summaries == 0  # not ended
    finally:
        store.close()


# -- end to end: exact counts at the gateway ----------------------------------------------
def client_for(gateway: EmulatorServer, timeout: float = 2.0) -> GatewayClient:
    return GatewayClient(gateway.api_token, gateway.sid, base_url=gateway.url, retry=QUICK, timeout=timeout)


PHONES = 100


def notifier(gateway: EmulatorServer, store: RedisStore, **kw: Any) -> Notifier:
    """100 phones, one group each: a round of alerts goes out in a few dynamic requests."""
    kw.setdefault("dispatch", FAST)
    return Notifier(
        kw.pop("client", None) or client_for(gateway),
        groups={f"g{i}": [f"0171{i:07d}"] for i in range(PHONES)},
        store=store,
        per_recipient_limit=None,
        close_at_exit=None,
        **kw,
    )


def alert_all(n: Notifier, start: int, count: int, wave: int = 100) -> None:
    for first in range(start, start + count, wave):
        for i in range(first, min(first + wave, start + count)):
            assert n.alert(f"event {i}", key=f"k{i}", groups=[f"g{i % PHONES}"])
        assert n.sync(30)  # one intake round per wave


def delivered(gateway: EmulatorServer) -> Counter[str]:
    return Counter(m.text.split(": ", 1)[1] for m in gateway.emulator.messages())


def assert_each_once(gateway: EmulatorServer, count: int) -> None:
    got = delivered(gateway)
    assert set(got) == {f"event {i}" for i in range(count)}, f"{len(got)} of {count} delivered"
    assert max(got.values()) == 1, [t for t, c in got.items() if c > 1][:5]


def test_redis_at_maxmemory_3000_alerts_each_delivered_once(
    sslsms_gateway, servers, tmp_path, caplog
) -> None:
    """Redis fills up (noeviction) a few waves in: the rest goes to the spool; nothing lost, nothing twice."""
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    n = notifier(sslsms_gateway, store)
    try:
        alert_all(n, 0, 1)  # connections up and scripts loaded: then room for a few waves only
        fill_to_maxmemory(server, headroom=400_000)
        caplog.set_level(logging.ERROR, logger="sslsms_notify.stores")
        alert_all(n, 1, 2999)
        assert any("out of memory" in r.getMessage() for r in caplog.records)  # it did fill up
        assert n.flush(120), n.stats()
        assert_each_once(sslsms_gateway, 3000)
        assert n.stats()["sent"] == 3000 and n.stats()["pending"] == 0
        # the first waves' windows are in Redis, the rest could not fit: in the spool
        assert 1 < server.client().zcard("sslsms:windows") < 3000
        assert store.spool().window_count() + server.client().zcard("sslsms:windows") == 3000
        assert n.close(10) is True
    finally:
        n.close(1)
        store.close()


def test_redis_restart_without_persistence_300_pending_each_delivered_once(
    sslsms_gateway, servers, tmp_path
) -> None:
    """The gateway fails, so 300 SMS wait in Redis (backing off); Redis restarts empty.

    The process re-adds all 300 (it wrote them and saw none settled); each is delivered once.
    """
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    sslsms_gateway.emulator.faults.outage(600)  # every request: a 503 page
    n = notifier(sslsms_gateway, store, dispatch=DispatchPolicy(tps=500, backoff=20, max_backoff=20, lease=3))
    try:
        alert_all(n, 0, 300)
        client = server.client()
        wait_for(  # every SMS tried, failed, and waiting out its backoff in Redis
            lambda: (
                client.zcard("sslsms:due") == 300
                and client.hlen("sslsms:claimed") == 0
                and len(client.zrangebyscore("sslsms:due", "-inf", time.time() + 5)) == 0
            ),
            what="all 300 at rest in Redis",
        )
        server.restart()
        wait_for(lambda: store.counters()["data_lost"] == 1, what="the loss to be noticed")
        assert store.counters()["readded"] == 300 and store.outbox_open() == 300
        sslsms_gateway.emulator.faults.clear()
        assert n.flush(120), n.stats()
        assert_each_once(sslsms_gateway, 300)
        assert n.stats()["sent"] == 300 and n.stats()["failed"] == 0
        assert n.close(10) is True
    finally:
        n.close(1)
        store.close()


def test_redis_restart_while_requests_hang_300_each_delivered_once(sslsms_gateway, servers, tmp_path) -> None:
    """The gateway takes the SMS but its answers never come; Redis restarts empty meanwhile.

    The re-added SMS go again under their ids, marked maybe sent: the gateway's
    "Duplicate CMS ID" answers them, and they count as delivered, once.
    """
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    sslsms_gateway.emulator.faults.timeout(count=12, hold=2.0, after_processing=True)
    n = notifier(sslsms_gateway, store, client=client_for(sslsms_gateway, timeout=0.5))
    try:
        alert_all(n, 0, 300)
        wait_for(lambda: len(sslsms_gateway.emulator.messages()) == 300, what="the gateway to take all 300")
        server.restart()
        wait_for(lambda: store.counters()["data_lost"] == 1, what="the loss to be noticed")
        assert n.flush(120), n.stats()
        assert_each_once(sslsms_gateway, 300)
        assert n.stats()["sent"] == 300 and n.stats()["failed"] == 0
        assert n.close(10) is True
    finally:
        n.close(1)
        store.close()


def test_failover_to_a_replica_nothing_lost_nothing_twice(sslsms_gateway, servers, tmp_path, caplog) -> None:
    """Host 1 keeps the old master's URL; after the failover that server is a read-only replica.

    Host 1's new alerts go to its spool and out from there; the SMS the old master held
    are on the new master, where host 2 sends them.
    """
    caplog.set_level(logging.WARNING, logger="sslsms_notify")
    old = servers(name="old")
    new = servers("--replicaof", "127.0.0.1", str(old.port), name="new")
    sslsms_gateway.emulator.faults.outage(600)
    store1 = RedisStore(old.url, spool=tmp_path / "host1.db")
    n1 = notifier(sslsms_gateway, store1)
    store2: RedisStore | None = None
    n2: Notifier | None = None
    try:
        alert_all(n1, 0, 100)
        assert old.client().wait(1, 10_000) == 1  # the replica has them all
        new.client().replicaof("NO", "ONE")  # the failover
        old.client().replicaof("127.0.0.1", new.port)
        wait_for(lambda: old.client().info("replication")["master_link_status"] == "up", what="resync")
        alert_all(n1, 100, 100)
        wait_for(lambda: store1.fault == READ_ONLY, what="writes refused")
        store2 = RedisStore(new.url, spool=tmp_path / "host2.db")
        n2 = notifier(sslsms_gateway, store2)
        sslsms_gateway.emulator.faults.clear()
        assert n2.flush(60), n2.stats()
        assert n1.flush(60), n1.stats()
        assert_each_once(sslsms_gateway, 200)
        assert any("read-only replica" in r.getMessage() for r in caplog.records)
        assert n1.close(10) is True and n2.close(10) is True
    finally:
        n1.close(1)
        if n2 is not None:
            n2.close(1)
        store1.close()
        if store2 is not None:
            store2.close()


def test_a_refused_write_leaves_another_threads_command_alone(servers, tmp_path, monkeypatch) -> None:
    """A write refused by a demoted master drops the store's connections so that new ones
    find the master again, but never one in use: closing it under another thread's command
    made redis-py fail there with ``AttributeError`` (no fault we know), which held a whole
    intake round in the failover test under a busy machine."""
    monkeypatch.setattr(redis_store, "RETRY_REDIS_AFTER", 0.0)  # every write tries Redis
    master = servers(name="master")
    replica = servers("--replicaof", "127.0.0.1", str(master.port), name="replica")
    wait_for(lambda: replica.client().info("replication")["master_link_status"] == "up", what="sync")
    store = RedisStore(replica.url, spool=tmp_path / "spool.db")
    outcome: dict[str, Any] = {}

    def read_in_flight() -> None:
        # a read a replica serves, that stays in flight for a while (within socket_timeout, 2 s)
        try:
            outcome["value"] = store._redis.client.xread({"nothing-comes": "$"}, block=1500)
        except Exception as exc:  # what the test is about: nothing may be raised here
            outcome["error"] = exc

    reader = threading.Thread(target=read_in_flight, daemon=True)
    reader.start()
    try:
        watcher = replica.client()

        def reading() -> set[str]:
            return {c["id"] for c in watcher.client_list() if c.get("cmd") == "xread"}

        in_flight = wait_for(reading, what="the XREAD in flight")
        store.outbox_add([item("refused", time.time())])  # READONLY: the store drops its idle connections
        assert store.fault == READ_ONLY
        # the same connection still waits in its XREAD (redis-py would hide a cut one by
        # retrying the read on a new connection; the cut is what hurts a command mid-reply)
        assert reading() == in_flight
        assert [i.csms_id for i in store.spool().outbox_list()] == ["refused"]
        reader.join(10)
        assert "error" not in outcome, repr(outcome.get("error"))
        assert outcome["value"] in ([], {})  # the XREAD ran out its block, as asked
    finally:
        reader.join(10)
        store.close()


def test_flush_is_not_true_while_redis_is_away_with_sms_of_this_process(
    sslsms_gateway, servers, tmp_path
) -> None:
    """flush() says True only when nothing is left. Before, while Redis did not answer the
    store counted nothing open there, so 10 SMS waiting in an unreachable Redis passed for
    delivered; and once it answered empty (restarted without persistence), flush() said
    True before the housekeeping noticed the loss: 0 of 10 delivered. They are counted
    from the journal (what this process wrote and has not seen settled) while Redis is
    away, and a Redis answering "nothing open" is checked for a loss first."""
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    sslsms_gateway.emulator.faults.outage(600)
    n = notifier(sslsms_gateway, store)
    try:
        alert_all(n, 0, 10)
        server.kill()
        assert n.flush(1) is False  # 10 SMS in a Redis that does not answer: not delivered
        assert delivered(sslsms_gateway) == Counter()
        server.start()  # empty: no persistence
        sslsms_gateway.emulator.faults.clear()
        assert n.flush(60), n.stats()
        assert_each_once(sslsms_gateway, 10)
        assert store.counters()["readded"] == 10
    finally:
        n.close(1)
        store.close()


def test_windows_opened_during_an_outage_hold_after_it(sslsms_gateway, servers, tmp_path) -> None:
    """30 alerts page during an outage; after it, their 30 repeats page nobody (they were 30 of 30)."""
    server = servers("--appendonly", "yes", "--appendfsync", "always")
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    n = notifier(sslsms_gateway, store)
    try:
        server.kill()
        alert_all(n, 0, 30)
        assert n.flush(30), n.stats()
        assert store.spool().window_count() == 30
        server.start()
        wait_for(lambda: store.spool().window_count() == 0, what="the windows to move back")
        assert store.counters()["rows_moved"] >= 30 and store.counters()["data_lost"] == 0
        alert_all(n, 0, 30)
        assert n.flush(30), n.stats()
        assert_each_once(sslsms_gateway, 30)
        assert n.stats()["suppressed"] == 30
        assert n.close(10) is True
    finally:
        n.close(1)
        store.close()


# -- more of what the guarantees page promises ------------------------------------------------
def test_digests_group_buffers_and_caps_opened_in_the_spool_move_back(servers, tmp_path) -> None:
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    try:
        now = store.now()

        def shared(tx) -> None:
            tx.digests.put(A, Digest(A, 2, now - 50, ("a", "b"), now + 100))
            tx.rates.put("rcpt:" + A, now + 30)

        store.transact(shared)

        def spooled(tx) -> None:
            tx.digests.put(A, Digest(A, 1, now - 10, ("c",), now + 60))
            tx.groups.put("ops", GroupBuffer("ops", now + 20, 3, ("x", "y", "z"), (A,)))
            tx.rates.put("rcpt:" + A, now + 20)
            tx.rates.put("spent", now - 5)  # run out: nothing to carry

        store.spool().transact(spooled)
        store.move_spool()
        assert store.counters()["rows_moved"] == 4

        def read(tx):
            tx.digests.load([A])
            tx.groups.load(["ops"])
            tx.rates.load(["rcpt:" + A, "spent"])
            return tx.digests.get(A), tx.groups.get("ops"), tx.rates.get("rcpt:" + A), tx.rates.get("spent")

        digest, group, rate, spent = store.transact(read)
        assert digest == Digest(A, 3, now - 50, ("a", "b", "c"), now + 60)
        assert group == GroupBuffer("ops", now + 20, 3, ("x", "y", "z"), (A,))
        assert rate is not None and rate == pytest.approx(now + 30 + 20, abs=1.0)  # both sides' bookings
        assert spent is None
        assert store.spool().transact(read) == (None, None, None, None)  # gone from the spool
    finally:
        store.close()


def test_without_script_flags_sms_in_a_full_redis_wait_for_room(servers, tmp_path) -> None:
    """Redis before 7.0 runs no allow-oom script: the SMS it holds wait, none is lost."""
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    try:
        store._allow_oom = False  # as a server without script flags
        now = store.now()
        store.outbox_add([item(f"w{i}", now) for i in range(3)])
        fill_to_maxmemory(server)
        assert store.outbox_claim(10, 30) == [] and store.fault == OUT_OF_MEMORY
        assert store.outbox_claim(10, 30) == [] and store.outbox_open() == 3
        server.client().config_set("maxmemory", 0)
        claimed = wait_for(lambda: store.outbox_claim(10, 30), what="room again")
        assert sorted(i.csms_id for i in claimed) == ["w0", "w1", "w2"]
    finally:
        store.close()
    compile_error = redis.ResponseError(
        "Error compiling script (new function): user_script:1: unexpected symbol near '#'"
    )
    assert redis_store._no_script_flags(compile_error)
    assert not redis_store._no_script_flags(redis.ResponseError("OOM command not allowed"))


def test_a_failover_to_a_lagging_replica_is_noticed_on_the_read_only_server(servers, tmp_path) -> None:
    """The new master lacks the last writes; this host's server became its replica.

    The marker read there is behind: the SMS this process knows are pending and the
    server lacks go to the spool (the server refuses writes).
    """
    old = servers(name="old")
    store = RedisStore(old.url, spool=tmp_path / "spool.db")
    try:
        now = store.now()
        store.outbox_add([item(f"early{i}", now) for i in range(3)])
        store.move_spool()
        old.client().save()
        lagging = Server(tmp_path / "lagging")  # starts from that snapshot: a replica that lagged
        lagging.directory.mkdir()
        shutil.copy(old.directory / "dump.rdb", lagging.directory / "dump.rdb")
        lagging.start()
        try:
            store.outbox_add([item(f"late{i}", now) for i in range(4)])
            store.move_spool()
            old.client().replicaof("127.0.0.1", lagging.port)  # the failover
            wait_for(lambda: old.client().info("replication")["master_link_status"] == "up", what="resync")
            assert wait_for(store.move_spool, what="the loss to be noticed") == 4
            assert store.fault == READ_ONLY and store.counters()["data_lost"] == 1
            assert sorted(i.csms_id for i in store.spool().outbox_list()) == [f"late{i}" for i in range(4)]
            assert all(i.maybe_sent for i in store.spool().outbox_list())
        finally:
            lagging.kill()
    finally:
        store.close()


def test_the_journal_is_bounded(servers, tmp_path, monkeypatch) -> None:
    server = servers()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    try:
        monkeypatch.setattr(redis_store, "JOURNAL_MAX", 3)
        now = store.now()
        store.outbox_add([item(f"j{i}", now) for i in range(5)])
        assert store.counters()["journal"] == 3 and store.counters()["journal_dropped"] == 2
        monkeypatch.setattr(redis_store, "JOURNAL_AGE", 0.0)
        store.move_spool()
        assert store.counters()["journal"] == 0  # older than an hour (here: at once): forgotten
    finally:
        store.close()
