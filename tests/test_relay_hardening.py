"""The relay under abuse and trouble, over real sockets: 413, duplicate credentials, a stuck store."""

from __future__ import annotations

import dataclasses
import logging
import selectors
import socket
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
from sslsms_notify.relay.server import RelayServer
from sslsms_notify.relay.settings import RelaySettings

from .conftest import FAST_RETRY

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
    assert store._lock.acquire(timeout=10)
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
        store._lock.release()
    assert wait_for(lambda: healthz(relay.url).json()["store"] == "ok")
    assert healthz(relay.url).json()["status"] == "ok"
