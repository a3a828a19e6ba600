"""Waiting for one alert's SMS (sslsms_notify.alerting.delivery), and the words it ends in.

Real parts: a Notifier on the in-process emulator (its real HTTP client over the
emulator's transport), memory and SQLite stores. What the CLI does with a Delivery
is tested end to end in test_cli.py; here the shared home itself: the blocking and
the async wait end for the same reasons, a delivery comes to one Outcome, and that
outcome carries the exit code ``send`` exits with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sslsms_notify import ExitCode, GatewayClient, Notifier, Outcome, SmsState
from sslsms_notify.alerting.delivery import (
    Delivery,
    WaitEnd,
    await_group,
    await_sms,
    deliver,
    rate_limit_reason,
    wait_for_sms,
)
from sslsms_notify.emulator import (
    DEMO_API_TOKEN,
    DEMO_SID,
    EmulatorConfig,
    EmulatorTransport,
    GatewayEmulator,
)
from sslsms_notify.gateway.errors import RateLimitError

from .conftest import FAST_RETRY

PHONE = "01711111111"


def notifier_on(emulator: GatewayEmulator, *, token: str = DEMO_API_TOKEN, **options: Any) -> Notifier:
    client = GatewayClient(token, DEMO_SID, transport=EmulatorTransport(emulator), retry=FAST_RETRY)
    options.setdefault("recipients", [PHONE])
    return Notifier(client, close_at_exit=None, **options)


@pytest.fixture
def emulator() -> GatewayEmulator:
    return GatewayEmulator()


@pytest.fixture
def notifier(emulator: GatewayEmulator) -> Iterator[Notifier]:
    n = notifier_on(emulator)
    yield n
    n.close(1)


def soon(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


# -- deliver(): one alert's SMS, and the Outcome it comes to ----------------------------------
def test_delivered_then_a_repeat_is_suppressed(notifier: Notifier, emulator: GatewayEmulator) -> None:
    first = deliver(notifier, notifier.submit("db1: disk 95% full"), soon())
    assert first.status is Outcome.QUEUED and len(first.csms_ids) == 1
    assert (first.delivered, first.failed, first.pending) == (1, 0, 0)
    assert first.outcome is Outcome.DELIVERED and first.outcome.exit_code is ExitCode.DELIVERED
    assert [m.text for m in emulator.messages()][-1].endswith("db1: disk 95% full")

    second = deliver(notifier, notifier.submit("db1: disk 95% full"), soon())
    assert second.status is Outcome.SUPPRESSED and second.csms_ids == []
    assert second.outcome is Outcome.SUPPRESSED and second.outcome.exit_code == 3


def test_progress_is_told_as_sms_are_decided(emulator: GatewayEmulator) -> None:
    n = notifier_on(emulator, recipients=[f"0171111{i:04d}" for i in range(5)])
    seen: list[tuple[int, int]] = []
    try:
        delivery = deliver(n, n.submit("to five phones"), soon(), progress=lambda d, t: seen.append((d, t)))
    finally:
        n.close(1)
    assert delivery.delivered == 5 and delivery.outcome is Outcome.DELIVERED
    assert seen and seen[-1] == (5, 5) and all(total == 5 for _done, total in seen)


def test_refused_credentials_end_the_wait_at_once(emulator: GatewayEmulator) -> None:
    n = notifier_on(emulator, token="wrong-token-0123456789")
    try:
        started = time.monotonic()
        delivery = deliver(n, n.submit("db1 down"), soon(30))
        waited = time.monotonic() - started
    finally:
        n.close(0.5)
    assert waited < 10, "the wait must not run to its deadline once the gateway refused the token"
    assert delivery.auth_failed and delivery.pending == 1
    assert delivery.outcome is Outcome.AUTH_FAILED and delivery.outcome.exit_code is ExitCode.AUTH
    assert "4001" in delivery.reason and "wrong-token" not in delivery.reason


def test_a_used_up_quota_is_rate_limited_and_waits() -> None:
    n = notifier_on(GatewayEmulator(EmulatorConfig(daily_quota=0)))
    try:
        delivery = deliver(n, n.submit("db1 down"), soon(1))
    finally:
        n.close(0.5)
    assert delivery.pending == 1 and not delivery.auth_failed
    assert delivery.rate_limited == "the gateway's request quota is used up (4029)"
    assert delivery.outcome is Outcome.RATE_LIMITED and delivery.outcome.exit_code is ExitCode.UNREACHABLE


def test_every_sms_refused_is_rejected(emulator: GatewayEmulator) -> None:
    emulator.config.blocked_msisdns.add("8801711111111")
    n = notifier_on(emulator)
    try:
        delivery = deliver(n, n.submit("to a blocked phone"), soon())
    finally:
        n.close(1)
    assert (delivery.delivered, delivery.failed, delivery.pending) == (0, 1, 0)
    assert delivery.outcome is Outcome.REJECTED and delivery.outcome.exit_code is ExitCode.BAD_INPUT
    assert delivery.reasons


def test_an_alert_the_intake_never_took_is_undecided(emulator: GatewayEmulator) -> None:
    n = notifier_on(emulator, start=False)  # nobody runs the intake
    try:
        delivery = deliver(n, n.submit("db1 down"), soon(0.2))
    finally:
        n.close(1)
    assert delivery.status is Outcome.UNDECIDED
    assert delivery.reasons == ["the store did not take the alert in time"]
    assert delivery.outcome is Outcome.UNREACHABLE and delivery.outcome.exit_code is ExitCode.UNREACHABLE


def test_an_alert_for_a_closed_notifier_is_dropped(emulator: GatewayEmulator) -> None:
    n = notifier_on(emulator)
    n.close(1)
    delivery = deliver(n, n.submit("too late"), soon(2))
    assert delivery.status is Outcome.DROPPED and delivery.reasons == ["the notifier is closed"]
    assert delivery.outcome is Outcome.ERROR and delivery.outcome.exit_code is ExitCode.ERROR


def test_group_wait_is_followed_into_the_group_sms(emulator: GatewayEmulator, tmp_path) -> None:
    n = notifier_on(emulator, group_wait=0.3, store=f"sqlite:///{tmp_path}/state.db")
    try:
        since = n.store.now()
        delivery = deliver(n, n.submit("db1 down"), soon())
        assert delivery.status is Outcome.BUFFERED and delivery.outcome is Outcome.BUFFERED
        await_group(n, delivery, ["default"], since, soon())
    finally:
        n.close(1)
    assert delivery.status is Outcome.QUEUED and delivery.delivered == 1
    assert delivery.outcome is Outcome.DELIVERED
    assert [m.text for m in emulator.messages()][-1].endswith("db1 down")


# -- the two waits share one step -------------------------------------------------------------
def test_the_blocking_and_the_async_wait_agree(notifier: Notifier) -> None:
    ticket = notifier.submit("db1 down")
    assert ticket.wait(10)
    blocking = wait_for_sms(notifier, ticket.csms_ids, soon())
    in_loop = asyncio.run(await_sms(notifier, ticket.csms_ids, soon()))
    assert blocking == in_loop == ({ticket.csms_ids[0]: SmsState.DELIVERED}, WaitEnd.DECIDED)


def test_the_waits_end_at_the_deadline_or_when_told_to_stop() -> None:
    n = notifier_on(GatewayEmulator(EmulatorConfig(daily_quota=0)))  # the SMS stays pending
    try:
        ticket = n.submit("db1 down")
        assert ticket.wait(10)
        outcomes, end = wait_for_sms(n, ticket.csms_ids, soon(0.2))
        assert end is WaitEnd.DEADLINE and outcomes == {ticket.csms_ids[0]: SmsState.PENDING}
        stopping = [False, False, True]  # the relay shutting down, on the third look
        _outcomes, end = asyncio.run(
            await_sms(n, ticket.csms_ids, soon(30), stop=lambda: stopping.pop(0), poll=0.01)
        )
        assert end is WaitEnd.STOPPED
    finally:
        n.close(0.5)


# -- Delivery.outcome: the one mapping send, the relay client and apprise share --------------
@pytest.mark.parametrize(
    ("delivery", "outcome"),
    [
        (Delivery(Outcome.QUEUED, delivered=1, failed=1, pending=1), Outcome.DELIVERED),
        (Delivery(Outcome.QUEUED, pending=1, auth_failed=True), Outcome.AUTH_FAILED),
        (Delivery(Outcome.QUEUED, pending=1, rate_limited="quota"), Outcome.RATE_LIMITED),
        (Delivery(Outcome.QUEUED, pending=1), Outcome.UNREACHABLE),
        (Delivery(Outcome.QUEUED, failed=2), Outcome.REJECTED),
        (Delivery(Outcome.QUEUED, throttled=1), Outcome.THROTTLED),  # every phone capped
        (Delivery(Outcome.SUPPRESSED), Outcome.SUPPRESSED),
        (Delivery(Outcome.THROTTLED, throttled=1), Outcome.THROTTLED),
        (Delivery(Outcome.UNROUTED), Outcome.UNROUTED),
        (Delivery(Outcome.REJECTED), Outcome.REJECTED),
        (Delivery(Outcome.BUFFERED), Outcome.BUFFERED),
        (Delivery(Outcome.UNDECIDED), Outcome.UNREACHABLE),
        (Delivery(Outcome.DROPPED), Outcome.ERROR),
    ],
)
def test_a_delivery_comes_to_one_outcome(delivery: Delivery, outcome: Outcome) -> None:
    assert delivery.outcome is outcome
    assert delivery.outcome.reported, "send reports every outcome a delivery comes to"


def test_rate_limits_in_words() -> None:
    assert "4029" in rate_limit_reason(RateLimitError("quota", status_code=4029))
    assert "4031" in rate_limit_reason(RateLimitError("tps", status_code=4031))
    assert "4030" in rate_limit_reason(RateLimitError("too many numbers", status_code=4030))


# -- the words and the exit codes ---------------------------------------------------------------
def test_outcomes_equal_their_words_and_carry_their_exit_codes() -> None:
    assert Outcome.QUEUED == "queued" and f"{Outcome.RATE_LIMITED}" == "rate_limited"
    assert {o for o in Outcome if o.decided_by_intake} == {
        "queued",
        "buffered",
        "suppressed",
        "throttled",
        "unrouted",
        "rejected",
        "dropped",
        "silenced",
        "held",
    }
    expected = {
        "delivered": 0,
        "buffered": 0,
        "rejected": 2,
        "unrouted": 2,
        "failed": 2,
        "suppressed": 3,
        "silenced": 3,
        "throttled": 4,
        "held": 4,
        "auth_failed": 5,
        "relay_refused": 5,
        "unreachable": 6,
        "rate_limited": 6,
        "relay_unreachable": 7,
        "interrupted": 130,
        "error": 1,
    }
    assert {str(o): int(o.exit_code) for o in Outcome if o.reported} == expected
    assert Outcome.exit_code_of("relay_refused") is ExitCode.AUTH
    assert Outcome.exit_code_of("a word from a newer relay") is ExitCode.ERROR
    for value in (*Outcome, *SmsState, *ExitCode):
        assert value.meaning.strip(), f"{value!r} has no meaning"


def test_a_ticket_says_an_outcome(notifier: Notifier) -> None:
    ticket = notifier.submit("db1 down")
    assert ticket.wait(10)
    assert isinstance(ticket.status, Outcome) and ticket.status == "queued"
    assert repr(ticket).startswith("Ticket(status='queued'")
