"""The fallback channel, told through apprise's ``json://`` to a receiver on loopback.

Each test counts exactly what the receiver got: one message per state change of the SMS
path (credentials refused, SMS stuck past ``fallback_after``, dead letters, recovered),
never one per SMS, and once across processes sharing a store.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.extras import MissingExtra

from .conftest import FAST_RETRY

PHONE = "01711111111"


class Receiver:
    """An HTTP server on loopback that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.got: list[dict[str, str]] = []
        received = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/fallback"

    def titles(self) -> list[str]:
        return [m["title"] for m in self.got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def notifiers(sslsms_gateway):
    made: list[Notifier] = []

    def make(fallback: list[str], **options) -> Notifier:
        options.setdefault(
            "dispatch", DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.3, auth_pause=0.3)
        )
        notifier = Notifier(
            GatewayClient(
                sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url, retry=FAST_RETRY
            ),
            recipients=[PHONE],
            per_recipient_limit=None,
            fallback=fallback,
            close_at_exit=None,
            **options,
        )
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close(2)


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


REFUSED = "sslsms-notify: the SMS gateway refuses our credentials"
STUCK = "sslsms-notify: SMS are not going out"
BACK = "sslsms-notify: SMS go out again"
DEAD = "sslsms-notify: SMS given up"


def test_credentials_refused_then_accepted_tell_the_fallback_twice(
    sslsms_gateway: EmulatorServer, receiver, notifiers
) -> None:
    sslsms_gateway.emulator.faults.api_code(4001, count=4)
    notifier = notifiers([receiver.url], fallback_after=600)
    for i in range(8):  # eight SMS, four refused requests: still one message each way
        notifier.alert(f"disk {i} full", key=f"disk{i}")
    assert wait_for(lambda: len(sslsms_gateway.emulator.messages(PHONE)) == 8)
    assert wait_for(lambda: len(receiver.got) >= 2)
    time.sleep(1.5)  # housekeeping goes on every second: nothing more is told
    assert receiver.titles() == [REFUSED, BACK]
    assert "[4001] Unauthorized" in receiver.got[0]["message"]
    assert sslsms_gateway.api_token not in json.dumps(receiver.got)
    assert notifier.stats()["fallback_told"] == 2


def test_an_outage_longer_than_fallback_after_is_told_once_and_its_end_once(
    sslsms_gateway: EmulatorServer, receiver, notifiers
) -> None:
    notifier = notifiers([receiver.url], fallback_after=1)
    sslsms_gateway.emulator.faults.outage(4)
    started = time.monotonic()
    for i in range(5):
        notifier.alert(f"queue {i} stuck", key=f"q{i}")
    assert wait_for(lambda: len(receiver.got) >= 1, timeout=10)
    assert time.monotonic() - started >= 1  # not before fallback_after
    during = receiver.titles()
    assert wait_for(lambda: len(sslsms_gateway.emulator.messages(PHONE)) == 5, timeout=20)
    assert wait_for(lambda: len(receiver.got) >= 2)
    time.sleep(1.5)
    assert during == [STUCK]  # one message for the outage, however many SMS and retries
    assert receiver.titles() == [STUCK, BACK]  # and one when it ended


def test_an_outage_shorter_than_fallback_after_tells_nothing(
    sslsms_gateway: EmulatorServer, receiver, notifiers
) -> None:
    notifier = notifiers([receiver.url], fallback_after=5)
    sslsms_gateway.emulator.faults.outage(1)
    notifier.alert("blip")
    assert wait_for(lambda: len(sslsms_gateway.emulator.messages(PHONE)) == 1)
    time.sleep(2)
    assert receiver.got == []


def test_dead_letters_are_told_once_per_kind(sslsms_gateway: EmulatorServer, receiver, notifiers) -> None:
    notifier = notifiers([receiver.url], dispatch=DispatchPolicy(tps=1000, max_age=1, backoff=0.05))
    sslsms_gateway.emulator.faults.outage(30, mode="drop")
    for i in range(4):
        notifier.alert(f"never delivered {i}", key=f"n{i}")
    assert wait_for(lambda: notifier.stats()["failed"] == 4, timeout=20)
    assert wait_for(lambda: len(receiver.got) >= 1)
    time.sleep(1.5)
    assert receiver.titles() == [DEAD]
    assert "expired" in receiver.got[0]["message"]


def test_two_processes_on_one_store_tell_each_change_once(
    sslsms_gateway: EmulatorServer, receiver, notifiers, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/shared.db"
    sslsms_gateway.emulator.faults.api_code(4003, count=6)
    one = notifiers([receiver.url], store=store)
    two = notifiers([receiver.url], store=store)
    for i in range(6):
        (one if i % 2 else two).alert(f"alert {i}", key=f"a{i}")
    assert wait_for(lambda: len(sslsms_gateway.emulator.messages(PHONE)) == 6, timeout=20)
    assert wait_for(lambda: len(receiver.got) >= 2)
    time.sleep(2)
    assert receiver.titles() == [REFUSED, BACK]
    assert one.stats()["fallback_told"] + two.stats()["fallback_told"] == 2


def test_a_fallback_apprise_cannot_read_is_refused_naming_it(notifiers) -> None:
    with pytest.raises(
        ValueError, match=r"^fallback\[1\]='nosuch://user:\*\*\*\*@x': apprise does not understand"
    ):
        notifiers(["json://127.0.0.1:9/x", "nosuch://user:secret@x"])
    with pytest.raises(ValueError, match=r"fallback\[0\]=.*must be a list of apprise URLs"):
        notifiers(["not a url"])


def test_without_apprise_a_fallback_is_one_clear_line(monkeypatch, notifiers) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # as if it were not installed
    with pytest.raises(MissingExtra) as refused:
        notifiers(["json://127.0.0.1:9/x"])
    assert str(refused.value) == (
        "apprise is not installed; the apprise plugin, its installer and the fallback channel "
        "need it: pip install 'sslsms-notify[apprise]' (from a checkout: pip install '.[apprise]')"
    )
