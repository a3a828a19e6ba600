"""Relays in pairs on a Redis that fails over: Sentinel, writes a replica has, health, metrics.

Real parts only: redis-server and redis-sentinel processes started here on loopback
(a master, a replica, three sentinels), `sslsms-notify serve` processes, the emulator
over HTTP. What each phone got is counted at the emulator.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.alerting.decisions import Hit, IdBook, Policy, apply_intake
from sslsms_notify.alerting.leases import forget_expired, hold, release
from sslsms_notify.config import Settings
from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.relay.server import RelayServer
from sslsms_notify.relay.settings import RelaySettings
from sslsms_notify.stores import MemoryStore, StoreUnavailableError, open_store
from sslsms_notify.stores import redis as redis_store
from sslsms_notify.stores.redis import RedisStore
from sslsms_notify.validation import StoreURL, mask_credentials, parse_sentinel_url

from .conftest import FAST_RETRY, free_port
from .test_redis_faults import Server, wait_for

pytestmark = pytest.mark.slow
TOKEN = "relay-pairs-token-for-tests-01"
PHONE, DBA = "01711111111", "01811111111"
PHONE_WIRE = "8801711111111"
CLI = str(Path(sys.executable).with_name("sslsms-notify"))
SENTINEL = "redis-sentinel"
SERVICE = "alerts"


# -- the URL -----------------------------------------------------------------------------------
def test_sentinel_urls_parse_and_bad_ones_name_the_rule_never_the_password() -> None:
    parts = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/alerts/2")
    assert parts.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (parts.service, parts.db, parts.password, parts.tls) == ("alerts", 2, "s3cret", False)
    assert "s3cret" not in repr(parts)
    tls = parse_sentinel_url("rediss+sentinel://app:pw@s1/alerts?sentinel_password=x&ssl_cert_reqs=none")
    assert (tls.username, tls.password, tls.db, tls.tls) == ("app", "pw", 0, True)
    assert dict(tls.options) == {"sentinel_password": "x", "ssl_cert_reqs": "none"}

    rule = StoreURL()
    assert rule.check("store", "redis+sentinel://s1:26379,s2:26379/alerts/0") == (
        "redis+sentinel://s1:26379,s2:26379/alerts/0"
    )
    for bad, says in (
        ("redis+sentinel://:s3cret@s1:26379", "must name the master's service"),
        ("redis+sentinel://:s3cret@s1:x/alerts/0", "'s1:x': the port must be a number"),
        ("redis+sentinel://:s3cret@s1/alerts/zero", "the database must be a number"),
        ("redis+sentinel://:s3cret@s1/alerts/0?sentinel_pass=1", "?sentinel_pass=: unknown"),
        ("redis+sentinel://:s3cret@/alerts/0", "not a sentinel address"),
        ("redis+sentinel://:s3cret@s1/alerts/0?ssl_ca_certs=/ca.pem", "TLS settings need rediss+sentinel://"),
    ):
        with pytest.raises(ValueError) as error:
            rule.check("store", bad)
        assert str(error.value).startswith("store='redis+sentinel://:****@") and says in str(error.value)
        assert "s3cret" not in str(error.value)
    masked = mask_credentials("redis+sentinel://:s3cret@s1/alerts/0?sentinel_password=hunter2")
    assert masked == "redis+sentinel://:****@s1/alerts/0?sentinel_password=****"
    with pytest.raises(
        ValueError, match=r"replica_wait='-1': must be a number of seconds from 0 to 10; 0 turns it off"
    ):
        Settings.from_url(f"sslsms://SID:T0KEN@{PHONE}?replica_wait=-1")
    settings = Settings.from_url(
        f"sslsms://SID:T0KEN@{PHONE}?replica_wait=0.25&store=redis%2Bsentinel://s1/a/0"
    )
    assert (settings.replica_wait, settings.store) == (0.25, "redis+sentinel://s1/a/0")


# -- a master, a replica, three sentinels --------------------------------------------------------
class Sentinels:
    """Three redis-sentinel processes watching ``master`` as :data:`SERVICE`, on loopback."""

    def __init__(self, directory: Path, master: Server) -> None:
        self.directory, self.master = directory, master
        self.ports = [free_port() for _ in range(3)]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self) -> Sentinels:
        for index, port in enumerate(self.ports):
            home = self.directory / f"sentinel-{index}"
            home.mkdir(parents=True)
            config = home / "sentinel.conf"  # a sentinel rewrites its own file
            config.write_text(
                textwrap.dedent(
                    f"""
                    port {port}
                    bind 127.0.0.1
                    dir {home}
                    sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2
                    sentinel down-after-milliseconds {SERVICE} 1000
                    sentinel failover-timeout {SERVICE} 5000
                    sentinel parallel-syncs {SERVICE} 1
                    """
                )
            )
            self.processes.append(
                subprocess.Popen(
                    [SENTINEL, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        wait_for(self._agreed, timeout=60, what="three sentinels that see each other and the replica")
        return self

    def client(self, index: int = 0) -> Any:
        return redis.Redis(port=self.ports[index], decode_responses=True, socket_timeout=2)

    def _agreed(self) -> bool:
        try:
            for index in range(3):
                state = self.client(index).sentinel_master(SERVICE)
                if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                    return False
        except (redis.RedisError, OSError):
            return False
        return True

    def master_port(self) -> int | None:
        """The master's port as a majority of sentinels say (None: no majority yet)."""
        said: Counter[int] = Counter()
        for index in range(3):
            try:
                _host, port = self.client(index).sentinel_get_master_addr_by_name(SERVICE)
                said[int(port)] += 1
            except (redis.RedisError, OSError, TypeError):
                continue
        port, votes = said.most_common(1)[0] if said else (0, 0)
        return port if votes >= 2 else None

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(10)


def replica_online(master: Server) -> bool:
    info = master.client().info("replication")
    return any(
        isinstance(v, dict) and v.get("state") == "online" for k, v in info.items() if k.startswith("slave")
    )


def settled_replication(master: Server) -> None:
    """The replica online and acknowledging (a fresh one may take a moment after its sync)."""
    wait_for(lambda: replica_online(master), timeout=30, what="the replica online")
    client = master.client()
    client.set("warm-up", "1")
    wait_for(lambda: client.execute_command("WAIT", 1, 1000) == 1, timeout=30, what="a replica acknowledging")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """A master and its replica."""
    master = Server(tmp_path / "master").start()
    replica = Server(tmp_path / "replica", "--replicaof", "127.0.0.1", str(master.port))
    try:
        replica.start()
        settled_replication(master)
        yield master, replica
    finally:
        if replica.process is not None:
            replica.process.send_signal(signal.SIGCONT)
        replica.kill()
        master.kill()


@pytest.fixture
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis is tried again 0.3 s after it failed (3 s in production)."""
    monkeypatch.setattr(redis_store, "RETRY_REDIS_AFTER", 0.3)


@pytest.fixture
def store_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="sslsms_notify")
    return caplog


def lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def notifier_on(gateway: EmulatorServer, store: Any, **options: Any) -> Notifier:
    options.setdefault("per_recipient_limit", None)
    options.setdefault("dispatch", DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.2, lease=3))
    return Notifier(
        GatewayClient(gateway.api_token, gateway.sid, base_url=gateway.url, retry=FAST_RETRY),
        groups={"oncall": [PHONE], "dba": [DBA]},
        default_groups=["oncall"],
        store=store,
        close_at_exit=None,
        **options,
    )


# -- leases -----------------------------------------------------------------------------------------
def test_a_lease_is_one_holders_until_it_expires_or_is_given_up(clock) -> None:
    store = MemoryStore(clock=clock)
    take = {who: (lambda tx, who=who: hold(tx, "job", who, 10.0)) for who in ("a", "b")}
    assert store.transact(take["a"]) and not store.transact(take["b"])
    clock.advance(4)
    assert store.transact(take["a"])  # its own: kept (renewed once half its time is gone)
    clock.advance(2)
    assert store.transact(take["a"])  # renewed now: until 16 s
    clock.advance(9)
    assert not store.transact(take["b"])
    clock.advance(2)  # a is gone: the lease expired
    assert store.transact(lambda tx: forget_expired(tx, 10)) == 1
    assert store.transact(take["b"]) and not store.transact(take["a"])
    store.transact(lambda tx: release(tx, ["job"], "a"))  # not a's to give up
    assert not store.transact(take["a"])
    store.transact(lambda tx: release(tx, ["job"], "b"))
    assert store.transact(take["a"])


# -- writes a replica has ------------------------------------------------------------------------
def test_each_write_waits_for_the_replica_and_a_silent_one_is_said_once_not_waited_on_forever(
    sslsms_gateway, pair, tmp_path, store_log
) -> None:
    master, replica = pair
    notifier = notifier_on(sslsms_gateway, f"redis://127.0.0.1:{master.port}/0", replica_wait=0.5)
    store = notifier.store
    assert isinstance(store, RedisStore) and store.replica_wait == 0.5
    try:
        for i in range(5):
            notifier.alert(f"replicated {i}", key=f"r{i}")
        assert notifier.sync(10)  # decided and in the store: in the replica too
        assert replica.client().zcard("sslsms:windows") == 5
        assert notifier.flush(15)
        counts = store.counters()
        assert counts["replica_waits"] >= 2 and counts["replica_timeouts"] == 0  # a round, a claim
        assert lines(store_log, "each write waits for one")

        assert replica.process is not None
        replica.process.send_signal(signal.SIGSTOP)  # connected, and silent
        started = time.monotonic()
        notifier.alert("while the replica is silent", key="silent-1")
        assert notifier.sync(10)
        took = time.monotonic() - started
        assert 0.45 <= took < 5, f"the round waited {took:.2f} s"  # replica_wait, not forever
        for i in range(3):
            notifier.alert(f"still silent {i}", key=f"silent-{i + 2}")
            assert notifier.sync(10)
        assert notifier.flush(20)  # the SMS go out anyway: availability first
        assert store.counters()["replica_timeouts"] >= 4
        said = lines(store_log, "no Redis replica acknowledged a write within replica_wait")
        assert len(said) == 1, said  # one line for the trouble, not one per write
        replica.process.send_signal(signal.SIGCONT)
        notifier.alert("the replica is back", key="back")
        assert notifier.flush(20)
        assert wait_for(lambda: lines(store_log, "Redis replicas acknowledge writes again"), timeout=20)
        texts = Counter(m.text.split("] ", 1)[1] for m in sslsms_gateway.emulator.messages())
        assert len(texts) == 10 and set(texts.values()) == {1}
    finally:
        if replica.process is not None:
            replica.process.send_signal(signal.SIGCONT)
        notifier.close(5)


def test_a_bulks_binding_is_on_the_replica_before_the_bulk_goes_out(sslsms_gateway, pair) -> None:
    """Spec 4.2: a bulk request carries one ``batch_csms_id`` and no id per SMS, so the
    gateway can only recognise a rerun that is the same request ("CSMS ID is duplicate on
    the same day"). A master killed right after the request must leave the replica with
    the binding (members and batch id): a replica without it would have the SMS planned
    anew under another id, and each phone paged twice.
    """
    master, replica = pair
    notifier = notifier_on(sslsms_gateway, f"redis://127.0.0.1:{master.port}/0", replica_wait=2.0)
    dispatcher = notifier.dispatcher
    #: per request: its batch id, and the batch id the replica has for each member
    seen: list[tuple[str, list[str]]] = []
    send = dispatcher._call

    def call(batch: Any) -> Any:
        on_replica = replica.client().hmget("sslsms:o", [i.csms_id for i in batch.items])
        seen.append((batch.batch_id or "", [json.loads(raw)[6] if raw else "" for raw in on_replica]))
        return send(batch)

    dispatcher._call = call  # type: ignore[method-assign]
    try:
        for i in range(5):
            assert notifier.alert(f"bulk {i}", key=f"b{i}", groups=["oncall", "dba"])
        assert notifier.flush(20)
        assert seen and all(batch_id for batch_id, _ in seen)  # bulks, each with its batch_csms_id
        for batch_id, members in seen:
            assert members == [batch_id] * len(members), (batch_id, members)
        assert notifier.store.counters()["replica_timeouts"] == 0
    finally:
        notifier.close(5)


def test_a_binding_redis_did_not_take_is_not_sent_and_its_sms_go_out_once_later(
    sslsms_gateway, redis_url, tmp_path, monkeypatch
) -> None:
    """Redis fails between the claim and the binding's write, and for the write after it:
    the request does not go out (had it gone, its outcome would be lost as well, and the
    rerun planned from Redis's unbound copy would be another request: each phone paged
    twice); the claims run out and each phone gets the SMS exactly once."""
    notifier = notifier_on(sslsms_gateway, RedisStore(redis_url, spool=tmp_path / "spool.db"))
    backend = notifier.store._redis  # type: ignore[attr-defined]
    update = backend.outbox_update
    failed: list[int] = []

    def flaky_update(items: Any) -> None:
        if len(failed) < 2 and (failed or any(i.batch_id for i in items)):
            failed.append(len(items))
            raise redis.ConnectionError("Connection reset by peer")  # the write's fate unknown
        update(items)

    monkeypatch.setattr(backend, "outbox_update", flaky_update)
    try:
        assert notifier.alert("bound once", key="once", groups=["oncall", "dba"])
        assert notifier.flush(30)
        assert failed[0] == 2  # the binding of the bulk to both phones
        wait_for(lambda: backend.outbox_open() == 0, timeout=30, what="nothing open in Redis itself")
        got = Counter(m.msisdn for m in sslsms_gateway.emulator.messages())
        assert got == {PHONE_WIRE: 1, f"880{DBA[1:]}": 1}, got
    finally:
        notifier.close(5)


def test_a_master_alone_is_not_waited_for_and_zero_turns_the_wait_off(pair, redis_url, tmp_path) -> None:
    alone = RedisStore(redis_url, spool=tmp_path / "alone.db")
    master, _replica = pair
    off = open_store(f"redis://127.0.0.1:{master.port}/0", replica_wait=0)
    try:
        for store in (alone, off):
            assert isinstance(store, RedisStore)
            store.maintain()
            store.transact(lambda tx: tx.rates.put("x", tx.now))
            assert store.counters()["replica_waits"] == 0
    finally:
        alone.close()
        off.close()


def test_a_demoted_master_behind_one_name_is_left_for_new_connections(pair, tmp_path, quick_retry) -> None:
    """A managed Redis fails over behind one DNS name: READONLY drops the store's connections,
    so the next ones resolve the name again (here: the same node, promoted back)."""
    master, replica = pair
    store = RedisStore(f"{master.url}?client_name=the-store", spool=tmp_path / "spool.db")
    watcher = master.client()

    def connections() -> set[str]:
        return {c["id"] for c in watcher.client_list() if c["name"] == "the-store"}

    try:
        store.transact(lambda tx: tx.rates.put("before", tx.now))
        before = connections()
        assert before
        replica.client().replicaof("NO", "ONE")
        watcher.replicaof("127.0.0.1", str(replica.port))  # the old master is a replica now
        store.transact(lambda tx: tx.rates.put("refused", tx.now))  # READONLY: into the spool
        assert store.fault == "read-only replica" and store.health().state == "spooling"
        assert not before & connections(), "the store kept its connections to the demoted master"
        watcher.replicaof("NO", "ONE")
        replica.client().replicaof("127.0.0.1", str(master.port))

        def writes() -> bool:
            store.transact(lambda tx: tx.rates.put("after", tx.now))
            store.maintain()
            return store.fault is None

        assert wait_for(writes, timeout=30, what="writes taken again")
        assert store.health().state == "durable"
    finally:
        store.close()


# -- Sentinel -------------------------------------------------------------------------------------
@pytest.fixture
def cluster(tmp_path: Path, pair: tuple[Server, Server]) -> Iterator[tuple[Server, Server, Sentinels]]:
    master, replica = pair
    sentinels = Sentinels(tmp_path / "sentinels", master)
    try:
        yield master, replica, sentinels.start()
    finally:
        sentinels.stop()


def test_a_service_no_sentinel_monitors_is_one_clear_line_at_start(cluster, tmp_path) -> None:
    _master, _replica, sentinels = cluster
    wrong = sentinels.url.replace(f"/{SERVICE}/", "/alrets/")
    with pytest.raises(StoreUnavailableError) as error:
        RedisStore(wrong, spool=tmp_path / "spool.db")
    assert str(error.value).endswith(
        f"no sentinel monitors a master named 'alrets' (they monitor: {SERVICE})"
    )
    store = RedisStore(sentinels.url, spool=tmp_path / "spool.db")
    try:
        store.transact(lambda tx: tx.rates.put("through-sentinel", tx.now))
        assert store.health().state == "durable"
    finally:
        store.close()


# -- health that tells the truth -------------------------------------------------------------------
def relay_on(gateway: EmulatorServer, store: Any) -> RelayServer:
    settings = RelaySettings(listen="127.0.0.1:0", tokens=(TOKEN,)).checked()
    return RelayServer(notifier_on(gateway, store), settings).start()


def http(relay: RelayServer) -> httpx.Client:
    return httpx.Client(base_url=relay.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_redis_stopped_under_a_relay_it_lives_spools_and_delivers_each_alert_once_after(
    sslsms_gateway, tmp_path, quick_retry
) -> None:
    server = Server(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always").start()
    store = RedisStore(server.url, spool=tmp_path / "spool.db")
    relay = relay_on(sslsms_gateway, store)
    try:
        with http(relay) as client:
            assert client.get("/readyz").json() == {"state": "ok", "store": "durable", "detail": ""}
            for i in range(3):
                assert (
                    client.post("/v1/alerts", json={"text": f"before {i}", "key": f"b{i}"}).status_code == 202
                )
            assert relay.notifier.flush(15)
            sslsms_gateway.stop()  # from here on, what is posted is delivered after Redis returns
            assert server.process is not None
            server.process.terminate()  # a clean stop: the AOF keeps what Redis had
            server.process.wait(10)
            server.process = None

            live = client.get("/healthz")
            assert live.status_code == 200, live.text
            assert live.json()["status"] == "degraded"
            assert live.json()["store"].startswith("spooling: Redis unreachable; writes go to the spool ")
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["state"] == "spooling"
            assert (
                ready.json()["store"] == "spooling" and str(tmp_path / "spool.db") in ready.json()["detail"]
            )
            for i in range(20):
                answer = client.post("/v1/alerts", json={"text": f"while Redis is away {i}", "key": f"w{i}"})
                assert answer.status_code == 202 and answer.json()["alerts"][0]["status"] == "queued"
            scraped = client.get("/metrics").text
            assert metric(scraped, "sslsms_store_spooling") == 1.0
            assert store.spool().outbox_open() == 20

            server.start()  # same port, same AOF
            assert wait_for(lambda: client.get("/readyz").json()["state"] == "ok", timeout=30)
            assert client.get("/healthz").json()["store"] == "ok"
            # the dedup windows opened meanwhile move back into Redis (SMS move when due)
            assert wait_for(lambda: store.counters()["rows_moved"] >= 20, timeout=30, what="windows moved")
            sslsms_gateway.start()
            assert relay.notifier.flush(30)
            assert store.spool().outbox_open() == 0
            assert metric(client.get("/metrics").text, "sslsms_store_spooling") == 0.0
        sent = Counter(m.text.split("] ", 1)[1] for m in sslsms_gateway.emulator.messages(PHONE))
        expected = [f"before {i}" for i in range(3)] + [f"while Redis is away {i}" for i in range(20)]
        assert sorted(sent) == sorted(expected) and set(sent.values()) == {1}
    finally:
        sslsms_gateway.start()
        relay.stop(5)
        server.kill()


def test_nothing_can_take_alerts_when_redis_and_its_spool_both_fail(sslsms_gateway, tmp_path) -> None:
    blocker = tmp_path / "a-file-not-a-directory"
    blocker.write_text("x")
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", spool=blocker / "spool.db")
    relay = relay_on(sslsms_gateway, store)
    try:
        with http(relay) as client:
            live = client.get("/healthz")
            assert live.status_code == 503 and live.json()["status"] == "down"
            assert "Redis unreachable, and the spool" in live.json()["store"]
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["state"] == "down"
    finally:
        relay.stop(1)


# -- metrics that sum right ------------------------------------------------------------------------
def test_store_wide_gauges_come_from_one_relay_and_another_takes_over(sslsms_gateway, redis_url) -> None:
    one, two = relay_on(sslsms_gateway, redis_url), relay_on(sslsms_gateway, redis_url)
    relays = [one, two]
    sslsms_gateway.stop()  # the SMS stay pending: a backlog to count
    try:

        def scrape(relay: RelayServer) -> str:
            with http(relay) as client:
                return client.get("/metrics").text

        def reporters() -> list[RelayServer]:
            return [r for r in relays if metric(scrape(r), "sslsms_store_reporter") == 1.0]

        assert wait_for(lambda: len(reporters()) == 1, timeout=20, what="one reporter")
        reporter = reporters()[0]
        other = two if reporter is one else one
        assert metric(scrape(other), "sslsms_store_reporter") == 0.0
        assert metric(scrape(other), "sslsms_outbox_pending") is None  # not exported there
        for index, relay in enumerate((one, two, one, two, one)):
            with http(relay) as client:
                body = [{"text": f"backlog {index}.{k}", "key": f"bl{index}.{k}"} for k in range(3)]
                assert client.post("/v1/alerts", json=body).status_code == 202
        total = sum(metric(scrape(r), "sslsms_outbox_pending") or 0 for r in relays)
        assert total == 15  # summed over the relays: each SMS once
        assert metric(scrape(reporter), "sslsms_dedup_windows") == 15

        relays.remove(reporter)
        reporter.stop(1)  # it gives the lease up as it closes: the other reports at once
        assert wait_for(lambda: metric(scrape(other), "sslsms_store_reporter") == 1.0, timeout=10)
        assert metric(scrape(other), "sslsms_outbox_pending") == 15
    finally:
        sslsms_gateway.start()
        for relay in relays:
            relay.stop(5)
        one.stop(1)
        two.stop(1)


# -- two relays, a failover ------------------------------------------------------------------------
@contextmanager
def serve(config: Path, state: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``sslsms-notify serve`` with a state directory (and spool) of its own, as on its own host."""
    port = free_port()
    env = {**os.environ, "SSLSMS_RELAY_TOKENS": TOKEN, "XDG_STATE_HOME": str(state)}
    env.pop("SSLSMS_URL", None)
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [CLI, "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/readyz", timeout=2).json()["state"] == "ok"
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, what="serve to start")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_two_relays_on_sentinel_the_master_killed_mid_stream_each_alert_once_to_each_phone(
    sslsms_gateway, cluster, tmp_path
) -> None:
    """300 alerts posted alternately to two relays; the master SIGKILLed after 150.

    Sentinel promotes the replica, the relays follow it (the spool covers the seconds in
    between), and each of the 300 alerts reaches each of the two phones exactly once:
    every 202 honoured, nothing sent twice.
    """
    master, replica, sentinels = cluster
    config = tmp_path / "relay.toml"
    gateway = sslsms_gateway
    config.write_text(
        textwrap.dedent(
            f"""
            url = "sslsms://{gateway.sid}:{gateway.api_token}@{PHONE}?base_url={gateway.url}"

            [pipeline]
            store = "{sentinels.url}"
            per_recipient_limit = 0
            tps = 200

            [groups]
            oncall = ["{PHONE}", "{DBA}"]
            """
        )
    )
    logs = [tmp_path / "relay-a.log", tmp_path / "relay-b.log"]
    with (
        serve(config, tmp_path / "host-a", logs[0]) as (url_a, proc_a),
        serve(config, tmp_path / "host-b", logs[1]) as (url_b, proc_b),
    ):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        clients = [httpx.Client(base_url=u, headers=headers, timeout=30) for u in (url_a, url_b)]
        try:

            def post(i: int) -> None:
                answer = clients[i % 2].post(
                    "/v1/alerts",
                    json={"text": f"failover alert {i:03d}", "key": f"fo{i}", "groups": ["oncall"]},
                )
                assert answer.status_code == 202, (i, answer.status_code, answer.text)
                assert answer.json()["alerts"][0]["status"] == "queued", (i, answer.text)

            for i in range(150):
                post(i)
            master.kill()  # SIGKILL: no goodbye to anyone
            i, during = 150, 0
            while i < 250 and sentinels.master_port() != replica.port:
                post(i)  # while the sentinels notice, vote and promote
                i, during = i + 1, during + 1
            wait_for(lambda: sentinels.master_port() == replica.port, timeout=60, what="the replica promoted")
            for rest in range(i, 300):
                post(rest)
            assert during > 0  # some were accepted while there was no master

            expected = {(f"880{n[1:]}", f"failover alert {i:03d}") for n in (PHONE, DBA) for i in range(300)}

            def delivered() -> bool:
                return len(gateway.emulator.messages()) >= len(expected)

            def settled() -> bool:
                healths = [c.get("/healthz").json() for c in clients]
                return all(h["pending"] == 0 and h["queue"] == 0 for h in healths)

            def followed() -> bool:  # writes go where they should again: to the new master
                return all(
                    c.get("/readyz").json() == {"state": "ok", "store": "durable", "detail": ""}
                    for c in clients
                )

            wait_for(followed, timeout=60, what="both relays on the new master")
            wait_for(delivered, timeout=180, what="600 SMS at the emulator")
            wait_for(settled, timeout=60, what="both relays with nothing pending")
        finally:
            for client in clients:
                client.close()
        for proc in (proc_a, proc_b):
            proc.send_signal(signal.SIGTERM)
        assert [proc_a.wait(30), proc_b.wait(30)] == [0, 0]  # stopped with every SMS delivered
    got = Counter((m.msisdn, m.text.split("] ", 1)[1]) for m in gateway.emulator.messages())
    twice = {k: n for k, n in got.items() if n > 1}
    assert not twice, twice
    assert set(got) == expected, (len(got), sorted(expected - set(got))[:5])
    # the new master has every alert's dedup window: replicated before each 202, or moved
    # back from a relay's spool once the relays had followed the failover
    assert replica.client().zcard("sslsms:windows") == 300


# -- TLS ---------------------------------------------------------------------------------------------
def test_rediss_sentinel_speaks_tls_to_the_sentinel_and_the_master(tmp_path) -> None:
    """A master and a sentinel on TLS only (certificates made here): the store reaches both."""
    tls = tmp_path / "tls"
    tls.mkdir()

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tls, check=True, capture_output=True, timeout=60)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=test-ca")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
            "-subj", "/CN=127.0.0.1")  # fmt: skip
    (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "node.pem", "-days", "1", "-extfile", "san.ext")  # fmt: skip
    files = ["--tls-cert-file", str(tls / "node.pem"), "--tls-key-file", str(tls / "node.key"),
             "--tls-ca-cert-file", str(tls / "ca.pem"), "--tls-auth-clients", "no"]  # fmt: skip
    port, sentinel_port = free_port(), free_port()
    plain = ["--port", "0", "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    master = subprocess.Popen(
        ["redis-server", *plain, "--tls-port", str(port), *files],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "sentinel.conf"
    config.write_text(
        f"port 0\ntls-port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\ntls-replication yes\n"
        f"tls-cert-file {tls / 'node.pem'}\ntls-key-file {tls / 'node.key'}\n"
        f"tls-ca-cert-file {tls / 'ca.pem'}\ntls-auth-clients no\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {port} 1\n"
    )
    sentinel = subprocess.Popen([SENTINEL, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss+sentinel://127.0.0.1:{sentinel_port}/{SERVICE}/0?ssl_ca_certs={tls / 'ca.pem'}"
    try:

        def ready() -> bool:
            try:
                ca = str(tls / "ca.pem")
                probe = redis.Redis("127.0.0.1", sentinel_port, ssl=True, ssl_ca_certs=ca, socket_timeout=2)
                return bool(probe.sentinel_master(SERVICE)["ip"])
            except (redis.RedisError, OSError):
                return False

        wait_for(ready, timeout=30, what="a TLS sentinel watching a TLS master")
        store = RedisStore(url, spool=tmp_path / "spool.db")
        try:
            store.transact(lambda tx: tx.rates.put("over-tls", tx.now))
            assert store.health().state == "durable" and store.fault is None
        finally:
            store.close()
    finally:
        for process in (sentinel, master):
            process.kill()
            process.wait(10)


# -- a commit whose outcome is unknown ----------------------------------------------------------
class DropAfter:
    """A TCP proxy to Redis that, once armed, forwards one ``command`` and then cuts the
    client off before Redis's reply: Redis applies it, and the client cannot know."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.command: bytes | None = None
        self.dropped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, command: str) -> None:
        self.command = f"${len(command)}\r\n{command}\r\n".encode()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, to_redis: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                seen, tail = tail + data, data[-16:]  # a command may straddle two reads
                if to_redis and self.command is not None and self.command in seen:
                    self.command = None
                    source.close()  # the client's end: Redis's reply will find no one
                    self.dropped.set()
                    time.sleep(0.5)  # Redis applies what it read before it notices
                    sink.close()
                    return
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("cut_after", ["EXEC", "WAIT"])
def test_a_commit_whose_answer_is_lost_leaves_each_sms_once_and_never_a_false_dead_letter(
    pair, tmp_path, cut_after
) -> None:
    """The connection is cut once Redis has the transaction. After EXEC, redis-py reports
    the lost WATCH as a conflict and the store reruns it on Redis, which has it: the SMS is
    there once, and nowhere else. After the WAIT for a replica, the store cannot know and
    reruns it in the spool with the same ids, its SMS marked possibly sent: whichever copy
    goes second is answered "Duplicate CMS ID", a delivery, not a dead letter."""
    master, _replica = pair
    proxy = DropAfter(master.port)
    store = RedisStore(f"redis://127.0.0.1:{proxy.port}/0", spool=tmp_path / "spool.db")
    ids = IdBook()
    policy = Policy(dedup_window=300, cap_limit=None)

    def intake(text: str) -> Any:
        key = f"oncall\x1f40\x1f{text}"
        hit = Hit(key, "oncall", (PHONE_WIRE,), 1, f"[ERROR] {text}", f"[ERROR] {text}", 0)
        return store.transact(lambda tx: apply_intake(tx, [hit], policy, ids))

    try:
        intake("before")  # connected, and Redis known to have a replica
        proxy.arm(cut_after)
        intake("cut off")
        assert proxy.dropped.is_set()
        in_redis = [i for i in master_outbox(master) if i.text.endswith("cut off")]
        assert len(in_redis) == 1 and not in_redis[0].maybe_sent  # Redis applied it, once
        spooled = [i for i in store.spool().outbox_list() if i.text.endswith("cut off")]
        if cut_after == "EXEC":
            assert spooled == []
        else:
            # rerun in the spool with the same id, marked possibly sent; or, when the rerun
            # could already read Redis's window, taken as the repeat it is (nothing spooled)
            assert [(i.csms_id, i.maybe_sent) for i in spooled] in ([(in_redis[0].csms_id, True)], [])
    finally:
        store.close()
        proxy.close()


def master_outbox(master: Server) -> list[Any]:
    direct = RedisStore(master.url, spool=master.directory / "reader-spool.db")
    try:
        return direct.outbox_list()
    finally:
        direct.close()
