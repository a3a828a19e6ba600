"""A second gateway account: SMS move to it when the first refuses the credentials or stays
unreachable, and each SMS is still delivered exactly once across both (counted at both
emulators). An SMS whose outcome at the first account is unknown never moves."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.config import Settings
from sslsms_notify.emulator import EmulatorServer

from .conftest import FAST_RETRY

PHONES = ["01711111111", "01811111111", "01911111111"]


@pytest.fixture
def second() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def make(sslsms_gateway: EmulatorServer, second: EmulatorServer):
    made: list[Notifier] = []

    def factory(**options) -> Notifier:
        options.setdefault(
            "dispatch", DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.3, auth_pause=0.5)
        )
        options.setdefault("fallback_after", 1.0)
        options.setdefault("recipients", PHONES)
        notifier = Notifier(
            GatewayClient(
                sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url, retry=FAST_RETRY
            ),
            secondary=GatewayClient(second.api_token, second.sid, base_url=second.url, retry=FAST_RETRY),
            per_recipient_limit=None,
            close_at_exit=None,
            **options,
        )
        made.append(notifier)
        return notifier

    yield factory
    for notifier in made:
        notifier.close(2)


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def sent(server: EmulatorServer) -> Counter[tuple[str, str]]:
    return Counter((m.msisdn, m.text) for m in server.emulator.messages())


def test_credentials_refused_by_the_first_account_send_everything_through_the_second_once(
    make, sslsms_gateway: EmulatorServer, second: EmulatorServer
) -> None:
    sslsms_gateway.emulator.faults.api_code(4001, count=100_000)
    notifier = make()
    for i in range(6):
        notifier.alert(f"disk {i} full", key=f"disk{i}")
    assert wait_for(lambda: sum(sent(second).values()) >= 18)
    time.sleep(1.5)  # probes of the first account go on: each refused, nothing sent twice
    assert sum(sent(second).values()) == 18 and set(sent(second).values()) == {1}
    assert sslsms_gateway.emulator.messages() == []
    assert notifier.stats()["secondary"] == 18 and notifier.stats()["pending"] == 0


def test_an_sms_whose_outcome_at_the_first_account_is_unknown_never_moves(
    make, sslsms_gateway: EmulatorServer, second: EmulatorServer
) -> None:
    faults = sslsms_gateway.emulator.faults
    faults.drop(count=1, after_processing=True)  # the gateway takes it, the answer is lost
    faults.api_code(4001, count=100_000)  # and the retry within the call is refused
    notifier = make(recipients=PHONES[:1])
    notifier.alert("taken, answer lost", key="first")
    assert wait_for(lambda: notifier.dispatcher.auth_failed.is_set())
    notifier.alert("after the refusal", key="second")
    assert wait_for(lambda: sum(sent(second).values()) == 1)
    time.sleep(1.5)  # the first SMS stays with the first account, refused there meanwhile
    [(_, moved)] = sent(second)
    assert moved == "[ERROR] " + notifier.host + ": after the refusal"
    assert notifier.stats()["pending"] == 1
    faults.clear()  # the first account works again: the resend under the same id is a duplicate
    assert wait_for(lambda: notifier.stats()["pending"] == 0)
    first = [m.text for m in sslsms_gateway.emulator.messages()]
    assert first == ["[ERROR] " + notifier.host + ": taken, answer lost"]  # once, never at the second
    assert sum(sent(second).values()) == 1


@pytest.mark.slow
def test_an_unreachable_first_account_moves_sms_after_fallback_after_and_gets_them_back(
    make, sslsms_gateway: EmulatorServer, second: EmulatorServer
) -> None:
    sslsms_gateway.stop()  # connections refused: nothing reaches it
    notifier = make(fallback_after=1.0)
    started = time.monotonic()
    notifier.alert("gateway down", key="down")
    assert wait_for(lambda: sum(sent(second).values()) == 3)
    assert time.monotonic() - started >= 1.0  # not before fallback_after
    sslsms_gateway.start()
    later = 0
    deadline = time.monotonic() + 20
    while not sslsms_gateway.emulator.messages() and time.monotonic() < deadline:
        later += 1
        notifier.alert(f"probe round {later}", key=f"round{later}")  # one of them probes the first account
        time.sleep(0.3)
    assert sslsms_gateway.emulator.messages(), "the first account was never tried again"
    assert wait_for(lambda: notifier.stats()["pending"] == 0)
    notifier.alert("back to normal", key="normal")
    assert wait_for(
        lambda: sum(1 for m in sslsms_gateway.emulator.messages() if "back to normal" in m.text) == 3
    )
    both = sent(sslsms_gateway) + sent(second)
    assert set(both.values()) == {1}  # every SMS once, across both accounts
    assert len(both) == 3 * (2 + later)
    assert not any("back to normal" in text for _, text in sent(second))


def test_the_second_account_is_read_from_gateway_secondary(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        """
[gateway]
sid = "MAIN"
api_token = "main-token-0001"
[gateway.secondary]
sid = "BACKUP"
token = "backup-token-0001"
base_url = "https://backup.example"
[pipeline]
recipients = ["01711111111"]
"""
    )
    settings = Settings.from_toml(config)
    assert settings.secondary == {
        "sid": "BACKUP",
        "api_token": "backup-token-0001",
        "base_url": "https://backup.example",
    }
    assert settings.describe()["secondary"] == "****" and "backup-token" not in repr(settings)
    notifier = settings.notifier(start=False, close_at_exit=None)
    try:
        assert notifier.dispatcher.failover is not None
        assert notifier.dispatcher.failover.client.sid == "BACKUP"
    finally:
        notifier.close(0)
    config.write_text(config.read_text().replace('base_url = "https://backup.example"', "port = 1"))
    with pytest.raises(ValueError, match=r"gateway\.secondary: unknown key\(s\) port"):
        Settings.from_toml(config)


def test_the_fallback_channel_hears_of_the_first_account_once_and_that_the_second_carries(
    make, sslsms_gateway: EmulatorServer, second: EmulatorServer
) -> None:
    from .test_fallback import Receiver

    receiver = Receiver()
    try:
        sslsms_gateway.emulator.faults.api_code(4001, count=100_000)
        notifier = make(fallback=[receiver.url], fallback_after=1.0)
        for i in range(4):
            notifier.alert(f"alert {i}", key=f"a{i}")
        assert wait_for(lambda: sum(sent(second).values()) == 12)
        assert wait_for(lambda: len(receiver.got) >= 1)
        time.sleep(2)  # past fallback_after: the SMS went out, nothing is "stuck"
        assert receiver.titles() == ["sslsms-notify: the SMS gateway refuses our credentials"]
        assert "The second gateway account carries the SMS meanwhile." in receiver.got[0]["message"]
    finally:
        receiver.close()
