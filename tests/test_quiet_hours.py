"""Quiet hours per group: the configuration, a clock the tests move (across midnight and two
daylight-saving changes in America/New_York), and one period on the real clock.

Counts are exact, at the emulator: during quiet hours, alerts below the group's
``quiet_min_severity`` wait and the group gets one digest when the period ends; an alert
that also pages an awake group pages it at once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.config import Settings
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator
from sslsms_notify.outcomes import Outcome
from sslsms_notify.quiet import Group, QuietHours
from sslsms_notify.stores import MemoryStore

from .conftest import FAST_RETRY, Clock

ONCALL, MANAGERS = "01711111111", "01911111111"
DHAKA, NEW_YORK = ZoneInfo("Asia/Dhaka"), ZoneInfo("America/New_York")


def at(zone: ZoneInfo, *parts: int) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()  # type: ignore[misc]


@pytest.fixture
def make(emulator: GatewayEmulator, clock: Clock) -> Iterator:
    made: list[Notifier] = []

    def factory(managers: dict[str, object], **kwargs: object) -> Notifier:
        transport = EmulatorTransport(emulator)
        client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=transport, retry=FAST_RETRY)
        notifier = Notifier(
            client,
            groups={"oncall": [ONCALL], "managers": {"numbers": [MANAGERS], **managers}},
            default_groups=["oncall", "managers"],
            store=MemoryStore(clock=clock),
            clock=clock,
            start=False,
            close_at_exit=None,
            per_recipient_limit=None,
            host="db1",
            dispatch=DispatchPolicy(tps=1000, backoff=1.0),
            **kwargs,  # type: ignore[arg-type]
        )
        made.append(notifier)
        return notifier

    yield factory
    for notifier in made:
        notifier.close(2)


def texts(emulator: GatewayEmulator, number: str) -> list[str]:
    return [m.text for m in emulator.messages(number)]


def settle(n: Notifier) -> None:
    n.tick(force_sweep=True)
    assert n.flush(5)


# -- the configuration ------------------------------------------------------------------------------
def test_a_group_table_sets_quiet_hours_and_the_list_form_keeps_working(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'url = "sslsms://SID:TOKEN@01711111111"\n'
        "[groups]\n"
        'oncall = ["01711111111"]\n'
        "[groups.managers]\n"
        'numbers = ["01911111111"]\n'
        'quiet = "22:00-08:00"\n'
        "[groups.noc]\n"
        'numbers = ["01811111111"]\n'
        'quiet = "23:30-06:15"\n'
        'timezone = "America/New_York"\n'
        'quiet_min_severity = "error"\n'
    )
    settings = Settings.from_toml(config)
    assert settings.groups["oncall"] == ("8801711111111",)
    managers, noc = settings.groups["managers"], settings.groups["noc"]
    assert isinstance(managers, Group) and managers == ("8801911111111",)
    assert managers.quiet == QuietHours.parse("22:00-08:00", "Asia/Dhaka", "critical")
    assert noc.quiet == QuietHours.parse("23:30-06:15", "America/New_York", "error")
    assert settings.describe()["groups"]["noc"] == {
        "numbers": ["8801811111111"],
        "quiet": "23:30-06:15",
        "timezone": "America/New_York",
        "quiet_min_severity": "error",
    }
    notifier = settings.notifier(start=False, close_at_exit=None)
    try:
        router = notifier.router
        assert set(router.quiet) == {"managers", "noc"} and router.groups["oncall"] == ("8801711111111",)
    finally:
        notifier.close(0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('quiet = "22:00"', "groups.managers.quiet='22:00': must be a period \"HH:MM-HH:MM\""),
        ('quiet = "22:00-24:30"', "groups.managers.quiet='22:00-24:30': must be a period"),
        ('quiet = "08:00-08:00"', "groups.managers.quiet='08:00-08:00': must end at another time"),
        ('quiet = "22:00-08:00"\ntimezone = "Asia/Dhakka"', "groups.managers.timezone='Asia/Dhakka': must"),
        ('quiet = "22:00-08:00"\nquiet_min_severity = "loud"', "groups.managers.quiet_min_severity='loud'"),
        ('timezone = "UTC"', "groups.managers.timezone: means nothing without quiet"),
        ('quite = "22:00-08:00"', "groups.managers: unknown key(s) quite (known: numbers, quiet, timezone"),
    ],
)
def test_a_bad_group_table_is_one_line_naming_the_key(tmp_path: Path, table: str, message: str) -> None:
    config = tmp_path / "config.toml"
    head = 'url = "sslsms://SID:TOKEN@01711111111"\n[groups.managers]\nnumbers = ["01911111111"]\n'
    config.write_text(f"{head}{table}\n")
    with pytest.raises(ValueError) as refused:
        Settings.from_toml(config)
    assert str(refused.value).startswith(f"{config}: {message}"), str(refused.value)


def test_a_group_table_needs_numbers(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('url = "sslsms://SID:TOKEN@01711111111"\n[groups.managers]\nquiet = "22:00-08:00"\n')
    with pytest.raises(ValueError, match=r"groups\.managers: a group table needs numbers"):
        Settings.from_toml(config)


def test_periods_keep_the_wall_clock_across_daylight_saving_changes() -> None:
    quiet = QuietHours.parse("22:00-08:00", "America/New_York")
    # the clocks go back at 02:00 on 2 November 2025: 11 hours of quiet
    start, end = quiet.period_at(at(NEW_YORK, 2025, 11, 2, 3, 0)) or (0, 0)
    assert (start, end) == (at(NEW_YORK, 2025, 11, 1, 22, 0), at(NEW_YORK, 2025, 11, 2, 8, 0))
    assert end - start == 11 * 3600
    # forward at 02:00 on 8 March 2026: 9 hours
    start, end = quiet.period_at(at(NEW_YORK, 2026, 3, 8, 1, 0)) or (0, 0)
    assert end - start == 9 * 3600
    # a time the clocks skip is reached when they skip it
    skipped = QuietHours.parse("02:30-04:00", "America/New_York")
    assert skipped.period_at(at(NEW_YORK, 2026, 3, 8, 1, 59)) is None
    start, _end = skipped.period_at(at(NEW_YORK, 2026, 3, 8, 3, 0)) or (0, 0)
    assert datetime.fromtimestamp(start, NEW_YORK).strftime("%H:%M %Z") == "03:00 EDT"


# -- the pipeline, on a clock the test moves ----------------------------------------------------------
def test_across_midnight_the_group_waits_and_gets_one_digest(make, emulator, clock) -> None:
    clock.now = at(DHAKA, 2026, 1, 14, 21, 59)
    n = make({"quiet": "22:00-08:00"})  # Asia/Dhaka, critical still pages
    before = n.submit("disk 70%", severity="warning")
    settle(n)
    assert before.status is Outcome.QUEUED
    clock.now = at(DHAKA, 2026, 1, 14, 22, 0)
    warning = n.submit("swap full", severity="warning")
    critical = n.submit("db1 down", severity="critical")
    settle(n)
    assert (warning.status, critical.status) == (Outcome.QUEUED, Outcome.QUEUED)  # oncall is awake
    clock.now = at(DHAKA, 2026, 1, 15, 3, 0)
    for _ in range(5):
        n.submit("replica lag", severity="error")
    managers_only = n.submit("budget", severity="error", groups=["managers"])
    settle(n)
    assert managers_only.status is Outcome.HELD
    assert texts(emulator, MANAGERS) == ["[WARN] db1: disk 70%", "[CRIT] db1: db1 down"]
    assert len(emulator.messages(ONCALL)) == 4  # disk, swap, db1 down, the lag (its repeats counted)
    assert n.stats()["quiet_held"] == 7
    clock.now = at(DHAKA, 2026, 1, 15, 7, 59, 59)
    settle(n)
    assert len(emulator.messages(MANAGERS)) == 2
    clock.now = at(DHAKA, 2026, 1, 15, 8, 0)
    settle(n)
    assert texts(emulator, MANAGERS)[2:] == [
        "[QUIET HOURS 22:00-08:00] 7 alerts held: [WARN] db1: swap full | [ERROR] db1: replica lag | "
        "[ERROR] db1: budget"
    ]
    clock.now += 3600
    settle(n)
    assert len(emulator.messages(MANAGERS)) == 3 and n.stats()["hold_summaries"] == 1


@pytest.mark.parametrize(
    ("night", "last_quiet", "first_awake"),
    [
        # fall back: a fixed offset (EDT's) would have ended the period at 07:00 EST
        ((2025, 11, 1), (2025, 11, 2, 7, 59, 59), (2025, 11, 2, 8, 0)),
        # spring forward
        ((2026, 3, 7), (2026, 3, 8, 7, 59, 59), (2026, 3, 8, 8, 0)),
    ],
)
def test_quiet_hours_across_a_daylight_saving_change(
    make, emulator, clock, night, last_quiet, first_awake
) -> None:
    clock.now = at(NEW_YORK, *night, 23, 0)
    n = make({"quiet": "22:00-08:00", "timezone": "America/New_York", "quiet_min_severity": "error"})
    held = n.submit("cert expires in 9 days", severity="warning", groups=["managers"])
    paged = n.submit("api 5xx", severity="error", groups=["managers"])  # at the minimum: pages
    settle(n)
    assert (held.status, paged.status) == (Outcome.HELD, Outcome.QUEUED)
    clock.now = at(NEW_YORK, *last_quiet)
    settle(n)
    assert texts(emulator, MANAGERS) == ["[ERROR] db1: api 5xx"]
    clock.now = at(NEW_YORK, *first_awake)
    settle(n)
    assert texts(emulator, MANAGERS) == [
        "[ERROR] db1: api 5xx",
        "[QUIET HOURS 22:00-08:00] 1 alert held: [WARN] db1: cert expires in 9 days",
    ]


def test_a_silence_ending_in_quiet_hours_joins_the_digest(make, emulator, clock) -> None:
    clock.now = at(DHAKA, 2026, 1, 14, 21, 0)
    n = make({"quiet": "22:00-08:00"})
    n.silence("source=batch", duration="3h", comment="reindex")
    n.submit("job slow", severity="warning", source="batch")
    settle(n)
    clock.now = at(DHAKA, 2026, 1, 15, 0, 0)  # the silence ends; managers are asleep
    settle(n)
    ended = "[SILENCE ENDED] reindex: 1 alert held (1 kind): [WARN] db1/batch: job slow"
    assert texts(emulator, ONCALL) == [ended]
    assert texts(emulator, MANAGERS) == []
    clock.now = at(DHAKA, 2026, 1, 15, 8, 0)
    settle(n)
    assert texts(emulator, MANAGERS) == [f"[QUIET HOURS 22:00-08:00] 1 alert held: {ended}"]


# -- the real clock ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_period_that_starts_and_ends_within_the_test(sslsms_gateway) -> None:
    """Threads on, real time: a quiet period from 2 s to 5 s from now, in UTC."""
    begin = math.ceil(time.time()) + 2
    end = begin + 3

    def clock(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")

    def as_sms_shows(ts: float) -> str:
        # as the SMS shows a time: seconds only when they are not zero ("10:57", "10:56:57")
        at = datetime.fromtimestamp(ts, UTC)
        return at.strftime("%H:%M:%S" if at.second else "%H:%M")

    client = GatewayClient(sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url)
    n = Notifier(
        client,
        groups={
            "oncall": [ONCALL],
            "managers": {"numbers": [MANAGERS], "quiet": f"{clock(begin)}-{clock(end)}", "timezone": "UTC"},
        },
        default_groups=["managers"],
        per_recipient_limit=None,
        host="h",
        close_at_exit=None,
    )
    try:
        while time.time() < begin + 0.1:
            time.sleep(0.05)
        held = n.submit("disk 85%", severity="warning")
        paged = n.submit("db1 down", severity="critical")
        assert held.wait(10) and paged.wait(10)
        assert (held.status, paged.status) == (Outcome.HELD, Outcome.QUEUED), time.time() - begin
        deadline = time.monotonic() + 20
        while len(sslsms_gateway.emulator.messages(MANAGERS)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        messages = sslsms_gateway.emulator.messages(MANAGERS)
        shown = [(m.text, round(m.received_at - end, 2)) for m in messages]
        assert [m.text for m in messages] == [
            "[CRIT] h: db1 down",
            f"[QUIET HOURS {as_sms_shows(begin)}-{as_sms_shows(end)}] 1 alert held: [WARN] h: disk 85%",
        ], shown
        assert end <= messages[1].received_at <= end + 2, shown
    finally:
        n.close(5)
    assert timedelta(seconds=end - begin) == timedelta(seconds=3)
