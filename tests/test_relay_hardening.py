"""The relay under abuse and trouble, over real sockets: connection limit, timeouts, 413,
duplicate credentials, a stuck store, and what ``sslsms-notify serve`` writes to its log."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import selectors
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.relay.server import FD_RESERVE, RelayServer, connection_budget
from sslsms_notify.relay.settings import LOG_LEVELS, RelaySettings

from .conftest import FAST_RETRY, free_port
from .test_serve import CLI, write_config

TOKEN = "hardening-relay-token-00001"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHONE, DBA = "01711111111", "01811111111"
DATA = Path(__file__).parent / "data"


# -- helpers ---------------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def relays(sslsms_gateway: EmulatorServer) -> Iterator[Callable[..., RelayServer]]:
    """Start in-process relays on the emulator (``**settings`` for ``[relay]``); all stopped after."""
    started: list[RelayServer] = []

    def make(store: str = "memory", **settings: object) -> RelayServer:
        notifier = Notifier(
            GatewayClient(
                sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url, retry=FAST_RETRY
            ),
            groups={"oncall": [PHONE], "dba": [DBA]},
            default_groups=["oncall"],
            store=store,
            close_at_exit=None,
            per_recipient_limit=None,
            dispatch=DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.2),
        )
        options = RelaySettings(listen="127.0.0.1:0", tokens=(TOKEN,), max_body=4096, **settings).checked()
        relay = RelayServer(notifier, options)
        started.append(relay)
        return relay.start()

    yield make
    for relay in started:
        relay.stop(5)


@pytest.fixture
def relay_log() -> Iterator[list[logging.LogRecord]]:
    """Every record of the relay's, uvicorn's and asyncio's loggers, whatever other tests configured."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("sslsms_notify", "uvicorn", "asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield records
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    """A list to put client sockets in; every one is closed at the end."""
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def connect(port: int, into: list[socket.socket], timeout: float = 20.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    into.append(sock)
    return sock


def open_idle(url: str, count: int, into: list[socket.socket], wave: int, timeout: float = 60.0) -> None:
    """``count`` connections that never send a byte, opened ``wave`` at a time in parallel.

    After each wave a ``/healthz`` on a new connection must answer: the relay accepts in
    order, so by then it has accepted the wave. (A wave larger than the listen backlog
    would overflow it: Linux then answers with SYN cookies, and a connection that sends
    nothing never reaches the relay at all.)
    """
    port = int(url.rsplit(":", 1)[1])
    for first in range(0, count, wave):
        selector = selectors.DefaultSelector()
        try:
            for _ in range(min(wave, count - first)):
                sock = socket.socket()
                into.append(sock)
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                selector.register(sock, selectors.EVENT_WRITE)
            deadline = time.monotonic() + timeout
            while selector.get_map() and time.monotonic() < deadline:
                for key, _ in selector.select(timeout=1):
                    selector.unregister(key.fileobj)
                    assert key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            assert not selector.get_map(), f"connections not made within {timeout} s"
        finally:
            selector.close()
        assert healthz(url).status_code == 200


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end closed this connection (without waiting)."""
    blocking = sock.getblocking()
    sock.setblocking(False)
    try:
        return sock.recv(1 << 16) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(blocking)


def seconds_until_closed(sock: socket.socket, within: float = 30.0) -> float:
    """Read (and drop) what arrives until the relay closes the connection; how long that took."""
    started = time.monotonic()
    sock.settimeout(within)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the relay kept the connection open for {within} s")
    return time.monotonic() - started


def read_head(sock: socket.socket, within: float = 30.0) -> bytes:
    """The status line and headers of the response on ``sock``."""
    sock.settimeout(within)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n", 1)[0].lower()


def healthz(url: str) -> httpx.Response:
    return httpx.get(f"{url}/healthz", timeout=30)  # a new connection each time


# -- timeouts -------------------------------------------------------------------------------------
def test_a_connection_that_sends_nothing_is_closed_after_idle_timeout(relays) -> None:
    """uvicorn arms its keep-alive timer only after a response: on its own it keeps these forever."""
    relay = relays(idle_timeout=0.5, read_timeout=60)
    with sockets() as opened:
        started = time.monotonic()  # before connecting: the relay's timer starts later
        seconds_until_closed(connect(relay.port, opened))
        took = time.monotonic() - started
    assert took >= 0.45, f"closed after {took:.2f} s, before idle_timeout"
    assert healthz(relay.url).status_code == 200


def test_a_request_that_trickles_in_is_closed_after_read_timeout(relays) -> None:
    relay = relays(idle_timeout=60, read_timeout=1)
    with sockets() as opened:
        # the request line and headers, a byte at a time: never silent, never complete
        started = time.monotonic()
        sock = connect(relay.port, opened)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        with pytest.raises(OSError):  # a reset, or a broken pipe, once the relay closed it
            while time.monotonic() - started < 30:
                sock.sendall(b"x")
                time.sleep(0.05)
                if closed_by_peer(sock):
                    raise ConnectionResetError
        assert time.monotonic() - started >= 0.95
        # the headers, then part of the body, then silence (idle_timeout is a minute)
        started = time.monotonic()
        sock = connect(relay.port, opened)
        sock.sendall(
            b"POST /v1/alerts HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer "
            + TOKEN.encode()
            + b'\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"text": '
        )
        seconds_until_closed(sock)
        assert time.monotonic() - started >= 0.95
    assert healthz(relay.url).status_code == 200


def test_answering_slowly_is_not_cut_by_read_timeout(relays, sslsms_gateway) -> None:
    """read_timeout bounds the client's sending, not the relay's answer (?wait up to 60 s)."""
    relay = relays(read_timeout=0.5)
    sslsms_gateway.stop()
    try:
        started = time.monotonic()
        answer = httpx.post(f"{relay.url}/v1/alerts?wait=2", json={"text": "slow"}, headers=AUTH, timeout=30)
        assert time.monotonic() - started >= 2
        assert answer.status_code == 200 and answer.json()["sms"]["pending"] == 1
    finally:
        sslsms_gateway.start()


# -- a body too large, duplicate credentials ------------------------------------------------------
def test_413_closes_the_connection_instead_of_reading_the_body(relays) -> None:
    relay = relays()
    head = (
        b"POST /v1/alerts HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer "
        + TOKEN.encode()
        + b"\r\ncontent-type: application/json\r\n"
    )
    with sockets() as opened:
        sock = connect(relay.port, opened)
        sock.sendall(head + b"content-length: 50000000\r\n\r\n")
        response = read_head(sock)
        assert response.startswith(b"http/1.1 413") and b"connection: close" in response
        sent, chunk = 0, b"x" * (1 << 16)
        sock.settimeout(10)
        with pytest.raises(OSError):  # reset, broken pipe, or a full buffer nobody reads
            while sent < 64 << 20:  # before the fix, the relay read and dropped every byte of it
                sock.sendall(chunk)
                sent += len(chunk)
        # chunked: no length given, refused once max_body is passed while reading
        sock = connect(relay.port, opened)
        # at once, so the relay has read all that was sent when it closes (else: a reset)
        sock.sendall(head + b"transfer-encoding: chunked\r\n\r\n" + (b"3e8\r\n" + b"x" * 1000 + b"\r\n") * 5)
        response = read_head(sock)
        assert response.startswith(b"http/1.1 413") and b"connection: close" in response
        seconds_until_closed(sock)
    assert healthz(relay.url).status_code == 200


def test_two_authorization_headers_are_refused_never_last_wins(relays) -> None:
    relay = relays()
    for first in (f"Bearer {TOKEN}", "Bearer not-the-token-at-all-0001"):
        headers = httpx.Headers([("Authorization", first), ("Authorization", f"Bearer {TOKEN}")])
        answer = httpx.post(f"{relay.url}/v1/alerts", json={"text": "x"}, headers=headers, timeout=30)
        assert answer.status_code == 400
        assert answer.json()["error"] == "2 Authorization headers: send exactly one"
        assert answer.headers["connection"] == "close"  # its body was not read
        assert TOKEN not in answer.text
    assert httpx.post(f"{relay.url}/v1/alerts", json={"text": "x"}, headers=AUTH).status_code == 202


# -- /healthz and /metrics with a store that does not answer --------------------------------------
def test_healthz_answers_within_a_second_while_the_store_is_stuck(relays, tmp_path) -> None:
    relay = relays(store=f"sqlite:///{tmp_path}/stuck.db")
    store = relay.notifier.store
    # The store's own lock, taken as a write waiting out another process's lock takes it:
    # every read of the store (check, counts) waits behind it.
    lock = store._file._lock
    assert lock.acquire(timeout=10)
    try:
        for _ in range(3):
            started = time.monotonic()
            answer = healthz(relay.url)
            took = time.monotonic() - started
            assert took < 2.5, f"/healthz took {took:.1f} s"  # 1 s, and a busy machine's slack
            assert answer.status_code == 200
            assert answer.json() == {
                "status": "degraded",
                "store": "no answer within 1 s",
                "gateway": "unknown",
                "queue": None,
                "pending": None,
                "dead": None,
            }
        # one health check thread waits on the store, not one per request
        assert [t.name for t in threading.enumerate()].count("sslsms-relay-health") == 1
        assert httpx.get(f"{relay.url}/metrics", headers=AUTH, timeout=30).status_code == 503
        # silent for as long as an intake waits (accept_timeout): alerts are refused, so: down
        relay.app.options = dataclasses.replace(relay.app.options, accept_timeout=2.0)
        assert wait_for(lambda: healthz(relay.url).status_code == 503)
        body = healthz(relay.url).json()
        assert body["status"] == "down" and body["store"].startswith("no answer for ")
    finally:
        lock.release()
    assert wait_for(lambda: healthz(relay.url).json()["store"] == "ok")
    assert healthz(relay.url).json()["status"] == "ok"


# -- the connection limit -----------------------------------------------------------------------------
def test_idle_connections_past_the_limit_do_not_shut_out_health_checks_or_alerts(
    relays, relay_log, sslsms_gateway
) -> None:
    relay = relays(max_connections=50, idle_timeout=120, read_timeout=120)
    assert relay.max_connections == 50
    with sockets() as opened:
        open_idle(relay.url, 80, opened, wave=40)
        for _ in range(10):
            assert healthz(relay.url).status_code == 200
        for i in range(3):
            alert = {"text": f"page {i}", "key": f"page-{i}"}
            answer = httpx.post(f"{relay.url}/v1/alerts", json=alert, headers=AUTH, timeout=30)
            assert answer.status_code == 202
        # the oldest idle connections made room: 30 of them
        assert wait_for(lambda: sum(closed_by_peer(s) for s in opened) >= 30)
    assert wait_for(lambda: len(sslsms_gateway.emulator.messages()) == 3)
    lines = [r.getMessage() for r in relay_log if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "connection limit reached" in lines[0], lines
    assert not any(r.exc_info for r in relay_log)


def test_when_every_connection_is_being_answered_a_newcomer_gets_503(relays, sslsms_gateway) -> None:
    relay = relays(max_connections=3)
    sslsms_gateway.stop()  # the three posts wait for a gateway that is away
    answers: list[httpx.Response] = []

    def post(i: int) -> None:
        answers.append(
            httpx.post(
                f"{relay.url}/v1/alerts?wait=60",
                json={"text": f"w{i}", "key": f"w{i}"},
                headers=AUTH,
                timeout=90,
            )
        )

    posts = [threading.Thread(target=post, args=(i,)) for i in range(3)]
    try:
        for thread in posts:
            thread.start()
        # all three read in full, so no longer the kind of connection closed to make room
        assert wait_for(lambda: relay.notifier.stats()["received"] == 3)

        def refused() -> bool:
            with sockets() as opened:
                sock = connect(relay.port, opened)
                try:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
                    head = read_head(sock)
                except ConnectionResetError:
                    return True
                assert head == b"" or head.startswith((b"http/1.1 503", b"http/1.1 200")), head
                return not head.startswith(b"http/1.1 200")

        assert wait_for(refused)
    finally:
        sslsms_gateway.start()
        for thread in posts:
            thread.join(60)
    assert [a.status_code for a in answers] == [200] * 3
    assert healthz(relay.url).status_code == 200


def test_the_default_limit_leaves_room_under_the_file_descriptor_limit() -> None:
    assert connection_budget(1024) == (1024 - FD_RESERVE - 4 * 64, 64)
    assert connection_budget(256) == (256 - FD_RESERVE - 4 * 16, 16)
    assert connection_budget(65536) == (4096, 128)  # capped: a pager's relay needs no more
    assert connection_budget(1024, 100) == (100, 64)
    with pytest.raises(ValueError, match=r"max_connections=5000: must be at most 704 .*RLIMIT_NOFILE 1024"):
        connection_budget(1024, 5000)
    with pytest.raises(ValueError, match=r"RLIMIT_NOFILE 64\).*raise it"):
        connection_budget(64)


def test_relay_settings_for_limits_and_logs_are_checked() -> None:
    settings = RelaySettings.load({"log_level": "WARNING", "max_connections": "AUTO"}, environ={})
    assert settings.log_level == "warning" and settings.max_connections == "auto"
    assert RelaySettings.load({"max_connections": 50}, environ={}).max_connections == 50
    for key, value, rule in [
        ("log_level", "loud", "log_level='loud': must be one of debug, info, warning, error, critical"),
        ("log_level", 10, "log_level=10: must be one of"),
        ("max_connections", 0, "max_connections=0: must be at least 1"),
        ("max_connections", "many", "max_connections='many': must be \"auto\""),
        ("idle_timeout", 0, "idle_timeout=0: must be greater than 0"),
        ("read_timeout", "slow", "read_timeout='slow': must be a number"),
    ]:
        with pytest.raises(ValueError) as refused:
            RelaySettings.load({key: value}, environ={})
        assert str(refused.value).startswith(rule)


def test_serve_takes_the_log_levels_the_settings_take() -> None:
    from sslsms_notify import cli

    assert cli.LOG_LEVELS == LOG_LEVELS


# -- sslsms-notify serve: its log, under a flood ----------------------------------------------------
@contextmanager
def serve(
    config: Path, tmp_path: Path, *args: str, nofile: int | None = None
) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """``sslsms-notify serve`` with its stderr in a file (a pipe nobody reads would block it)."""
    port = free_port()
    command = [CLI, "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}", *args]
    if nofile is not None:
        command = ["sh", "-c", f'ulimit -n {nofile} && exec "$@"', "sh", *command]
    env = {**os.environ, "SSLSMS_RELAY_TOKENS": TOKEN, "XDG_STATE_HOME": str(tmp_path / "state")}
    log = tmp_path / f"serve-{port}.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _answers(url) or proc.poll() is not None), "serve did not start"
        assert proc.poll() is None, log.read_text()
        yield url, proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


@pytest.mark.slow
def test_serve_logs_dead_letters_misrouted_alerts_and_what_shutdown_left(sslsms_gateway, tmp_path) -> None:
    config = write_config(
        tmp_path / "relay.toml", sslsms_gateway, f"sqlite:///{tmp_path}/r.db", shutdown_timeout=2.0
    )
    sslsms_gateway.emulator.config.blocked_msisdns.add("8801811111111")  # dba's phone
    with serve(config, tmp_path) as (url, proc, log):
        # a dead letter: the gateway refuses the number for good
        dead = httpx.post(
            f"{url}/v1/alerts?wait=20", json={"text": "to dba", "groups": ["dba"]}, headers=AUTH
        )
        assert dead.json()["sms"] == {"delivered": 0, "pending": 0, "failed": 1}
        # a webhook alert whose groups label names a group this relay lacks
        body = json.loads((DATA / "alertmanager_firing.json").read_bytes())
        for alert in body["alerts"]:
            alert["labels"]["sms_groups"] = "oncal"
        assert httpx.post(f"{url}/v1/alertmanager", json=body, headers=AUTH).status_code == 202
        assert wait_for(lambda: len(sslsms_gateway.emulator.messages(PHONE)) == len(body["alerts"]))
        # SMS left undelivered at shutdown: the gateway is away, and each retry fails
        retried = _metric(url, "sslsms_sms_retried_total")
        sslsms_gateway.stop()
        try:
            assert (
                httpx.post(f"{url}/v1/alerts", json={"text": "left behind"}, headers=AUTH).status_code == 202
            )
            assert wait_for(lambda: _metric(url, "sslsms_sms_retried_total") >= retried + 3)
            assert stop(proc) == 6
        finally:
            sslsms_gateway.start()
    text = log.read_text()
    assert "INFO: event='relay listening'" in text
    assert "WARNING: event='SMS given up'" in text
    assert "WARNING: event='groups label names groups this relay lacks" in text and "unknown='oncal'" in text
    assert "WARNING: event='closed with SMS undelivered; they stay in the outbox'" in text
    # the outage is said once, by the dispatcher; the client's line per retry is DEBUG
    assert text.count("event='gateway failing; SMS are kept and retried with backoff'") == 1
    assert "gateway request failed" not in text
    assert TOKEN not in text and sslsms_gateway.api_token not in text and "Traceback" not in text


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=30).text
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(f"{name} "))


@pytest.mark.slow
def test_serve_log_level_from_the_command_line_or_the_config(sslsms_gateway, tmp_path) -> None:
    config = write_config(tmp_path / "relay.toml", sslsms_gateway, "memory", log_level="ERROR")
    sslsms_gateway.emulator.config.blocked_msisdns.add("8801811111111")
    with serve(config, tmp_path) as (url, proc, log):  # [relay] log_level = "ERROR"
        alert = {"text": "to dba, quietly", "groups": ["dba"]}
        dead = httpx.post(f"{url}/v1/alerts?wait=20", json=alert, headers=AUTH)
        assert dead.json()["sms"]["failed"] == 1
        stop(proc)
    assert "SMS given up" not in log.read_text() and "INFO" not in log.read_text()
    with serve(config, tmp_path, "--log-level", "Warning") as (url, proc, log):  # the option wins
        alert = {"text": "to dba, with warnings", "groups": ["dba"]}
        dead = httpx.post(f"{url}/v1/alerts?wait=20", json=alert, headers=AUTH)
        assert dead.json()["sms"]["failed"] == 1
        stop(proc)
    assert "SMS given up" in log.read_text() and "INFO" not in log.read_text()
    env = {**os.environ, "SSLSMS_RELAY_TOKENS": TOKEN, "XDG_STATE_HOME": str(tmp_path / "state")}
    for args, rule in [
        (["--log-level", "loud"], "Invalid value for '--log-level': 'loud' is not one of"),
        (
            [
                "--config",
                str(write_config(tmp_path / "bad.toml", sslsms_gateway, "memory", log_level="loud")),
            ],
            "log_level='loud': must be one of debug, info, warning, error, critical (any case)",
        ),
    ]:
        if args[0] != "--config":
            args = ["--config", str(config), *args]
        refused = subprocess.run([CLI, "serve", *args], env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2
        assert rule in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1024, reason="this test opens 250 sockets of its own"
)
def test_serve_under_a_low_fd_limit_keeps_answering_a_flood_of_idle_connections(
    sslsms_gateway, tmp_path
) -> None:
    """RLIMIT_NOFILE 256: the default limit leaves room, so accept() never fails; the log stays short."""
    config = write_config(
        tmp_path / "relay.toml", sslsms_gateway, f"sqlite:///{tmp_path}/r.db", idle_timeout=120.0
    )
    with serve(config, tmp_path, nofile=256) as (url, proc, log), sockets() as opened:
        assert "max_connections=128 fd_limit=256" in log.read_text()
        before = len(log.read_text().splitlines())
        open_idle(url, 250, opened, wave=8)  # the listen backlog is 16 under this limit
        assert wait_for(lambda: sum(closed_by_peer(s) for s in opened) >= 250 - 128)
        for _ in range(5):
            assert healthz(url).status_code == 200
        answer = httpx.post(f"{url}/v1/alerts?wait=20", json={"text": "through the flood"}, headers=AUTH)
        assert answer.json()["sms"]["delivered"] == 1
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) <= 128 + FD_RESERVE
        # and bad requests, one connection each: uvicorn's line for them comes once
        for _ in range(20):
            with sockets() as garbage:
                sock = connect(int(url.rsplit(":", 1)[1]), garbage)
                sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                seconds_until_closed(sock)
        assert healthz(url).status_code == 200
        grown = log.read_text().splitlines()[before:]
        assert len(grown) == 2, grown  # the limit reached; uvicorn's invalid request, once
        assert "connection limit reached" in grown[0]
        assert stop(proc) == 0
    text = log.read_text()
    assert "connections closed to make room under the connection limit" in text.splitlines()[-1]
    assert "Traceback" not in text and "out of system resource" not in text
    assert text.count("Invalid HTTP request received.") == 1


@pytest.mark.slow
def test_serve_refuses_a_max_connections_its_fd_limit_cannot_hold(sslsms_gateway, tmp_path) -> None:
    config = write_config(tmp_path / "relay.toml", sslsms_gateway, "memory", max_connections=1000)
    env = {**os.environ, "SSLSMS_RELAY_TOKENS": TOKEN, "XDG_STATE_HOME": str(tmp_path / "state")}
    result = subprocess.run(
        ["sh", "-c", 'ulimit -n 256 && exec "$@"', "sh", CLI, "serve", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Error: max_connections=1000: must be at most 128 under this process's file-descriptor limit" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
