"""Someone is always reached: heartbeats and escalation, with a clock the tests move.

Every count is what the emulator's phones got, exactly. Multi-process behaviour (two
relays on one Redis, a real Alertmanager's watchdog) is in tests/test_oncall_relay.py,
the fallback channel in tests/test_fallback.py.
"""

from __future__ import annotations

import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.alerting.escalation import FAILED_TRIES, normalize_code
from sslsms_notify.durations import Duration, format_duration, parse_duration
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator
from sslsms_notify.gateway.text import count_segments
from sslsms_notify.stores import MemoryStore
from sslsms_notify.stores.sqlite import SQLiteStore

from .conftest import FAST_RETRY, Clock

ONCALL = "01711111111"
MANAGER = "01911111111"
ESCALATING = [
    {"groups": ["oncall"], "min_severity": "critical", "escalate_after": "15m", "escalate_to": ["managers"]},
    {"groups": ["oncall"]},
]


def bd(number: str) -> str:
    return "880" + number[1:]


@pytest.fixture
def make(emulator: GatewayEmulator, clock: Clock):
    made: list[Notifier] = []

    def factory(store=None, **kwargs) -> Notifier:
        client = GatewayClient(
            DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator), retry=FAST_RETRY
        )
        kwargs.setdefault("groups", {"oncall": [ONCALL], "managers": [MANAGER]})
        kwargs.setdefault("per_recipient_limit", None)
        kwargs.setdefault("host", "db1")
        kwargs.setdefault("dispatch", DispatchPolicy(tps=1000))
        notifier = Notifier(
            client,
            store=store if store is not None else MemoryStore(clock=clock),
            clock=clock,
            start=False,
            close_at_exit=None,
            **kwargs,
        )
        made.append(notifier)
        return notifier

    yield factory
    for notifier in made:
        notifier.close(2)


def texts(emulator: GatewayEmulator, number: str) -> list[str]:
    return [m.text for m in emulator.messages(number)]


def settle(notifier: Notifier) -> None:
    assert notifier.flush(5)


# -- durations -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400), ("1h30m", 5400), ("90", 90), ("90s", 90), ("15M", 900), (" 7d ", 604800), (2.5, 2.5)],
)
def test_durations_read_as_people_write_them(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "5q", "1h-5m", "nan", True, None, [1]])
def test_what_is_no_duration_is_none(text) -> None:
    assert parse_duration(text) is None


def test_durations_write_back_short() -> None:
    assert [format_duration(s) for s in (86400, 5400, 90, 604800, 600, 1.5)] == [
        "24h",
        "1h30m",
        "1m30s",
        "7d",
        "10m",
        "1.5s",
    ]
    with pytest.raises(ValueError, match=r"^every='5q': must be a duration like 90s"):
        Duration(1, 86400).check("every", "5q")


# -- heartbeats ------------------------------------------------------------------------------
def test_a_silent_heartbeat_pages_missed_once_and_its_return_recovered_once(make, emulator, clock) -> None:
    n = make()
    created = n.heartbeat("backup", every="24h", grace="1h", groups=["oncall"])
    assert created.status == "created" and created.heartbeat.due_at == clock.now + 25 * 3600
    clock.advance(25 * 3600 - 1)  # one second before the deadline: nothing
    n.tick(force_sweep=True)
    settle(n)
    assert texts(emulator, ONCALL) == []
    clock.advance(2)
    for _ in range(3):  # swept again and again: still one page
        n.tick(force_sweep=True)
        settle(n)
        clock.advance(3600)
    sent = texts(emulator, ONCALL)
    assert len(sent) == 1
    assert sent[0].startswith("[MISSED] backup: no heartbeat since ") and sent[0].endswith("(every 24h)")
    assert [b.missed_at > 0 for b in n.heartbeats()] == [True]
    back = n.heartbeat("backup")  # the job runs again
    assert back.status == "recovered" and len(back.csms_ids) == 1
    settle(n)
    n.heartbeat("backup")
    settle(n)
    sent = texts(emulator, ONCALL)
    assert len(sent) == 2 and sent[1].startswith("[RECOVERED] backup: heartbeat at ")
    assert "every 24h)" in sent[1]
    assert emulator.messages(MANAGER) == []
    stats = n.stats()
    assert (stats["heartbeats_missed"], stats["heartbeats_recovered"]) == (1, 1)


def test_a_heartbeat_pinging_on_time_never_pages(make, emulator, clock) -> None:
    n = make()
    for _ in range(10):
        n.heartbeat("queue-check", every="5m", grace="1m", groups=["oncall"])
        clock.advance(5 * 60 + 50)  # late, within the grace
        n.tick(force_sweep=True)
    settle(n)
    assert texts(emulator, ONCALL) == []


def test_a_new_heartbeat_needs_every_and_a_good_name(make) -> None:
    n = make()
    with pytest.raises(ValueError, match=r"^every: required for a new heartbeat"):
        n.heartbeat("backup")
    with pytest.raises(ValueError, match=r"^name='bad name': must be 1 to 64 letters"):
        n.heartbeat("bad name", every=60)
    with pytest.raises(ValueError, match=r"^every='soon': must be a duration"):
        n.heartbeat("backup", every="soon")
    with pytest.raises(ValueError, match=r"^grace='-1': must be a duration"):
        n.heartbeat("backup", every="1h", grace="-1")
    with pytest.raises(ValueError, match=r"unknown group 'nobody'"):
        n.heartbeat("backup", every="1h", groups=["nobody"])
    assert n.heartbeats() == []


def test_grace_defaults_to_a_tenth_of_every_at_most_an_hour_and_settings_stay(make) -> None:
    n = make()
    assert n.heartbeat("daily", every="24h").heartbeat.grace == 3600
    assert n.heartbeat("often", every="5m").heartbeat.grace == 30
    n.heartbeat("kept", every="1h", grace="5m", groups=["managers"])
    kept = n.heartbeat("kept").heartbeat  # a ping without options keeps them
    assert (kept.every, kept.grace, kept.groups, kept.numbers) == (3600, 300, ("managers",), (bd(MANAGER),))


def test_heartbeats_go_where_the_routes_send_source_heartbeat(make, emulator, clock) -> None:
    n = make(
        routes=[{"groups": ["managers"], "sources": ["heartbeat"], "stop": True}, {"groups": ["oncall"]}]
    )
    assert n.heartbeat("backup", every=60, grace=0).heartbeat.groups == ("managers",)
    clock.advance(61)
    n.tick(force_sweep=True)
    settle(n)
    assert len(texts(emulator, MANAGER)) == 1 and texts(emulator, ONCALL) == []


def test_a_deleted_heartbeat_pages_nothing(make, emulator, clock) -> None:
    n = make()
    n.heartbeat("old-job", every=60, grace=0, groups=["oncall"])
    assert n.forget_heartbeat("old-job") and not n.forget_heartbeat("old-job")
    clock.advance(3600)
    n.tick(force_sweep=True)
    settle(n)
    assert texts(emulator, ONCALL) == [] and n.heartbeats() == []


def test_a_heartbeat_missed_on_a_sqlite_store_is_paged_by_another_process(make, emulator, clock, tmp_path):
    """The ping comes from one process (cron), the timers run in another (the relay)."""
    url = f"sqlite:///{tmp_path}/state.db"
    cron = make(SQLiteStore(url, clock=clock))
    cron.heartbeat("backup", every="1h", grace=0, groups=["oncall"])
    cron.close(1)
    relay = make(SQLiteStore(url, clock=clock))
    clock.advance(3601)
    relay.tick(force_sweep=True)
    settle(relay)
    assert len(texts(emulator, ONCALL)) == 1


# -- escalation ---------------------------------------------------------------------------------
def code_of(text: str) -> str:
    assert " ack:" in text, text
    return text.rsplit(" ack:", 1)[1]


def test_an_unacknowledged_critical_alert_escalates_once_at_escalate_after(make, emulator, clock) -> None:
    n = make(routes=ESCALATING)
    n.alert("Disk full", severity="critical", source="app.db")
    settle(n)
    first = texts(emulator, ONCALL)
    assert len(first) == 1 and first[0].startswith("[CRIT] db1/app.db: Disk full ack:")
    assert normalize_code(code_of(first[0])) == code_of(first[0])
    clock.advance(15 * 60 - 1)
    n.tick(force_sweep=True)
    settle(n)
    assert texts(emulator, MANAGER) == []
    clock.advance(1)
    for _ in range(3):
        n.tick(force_sweep=True)
        settle(n)
        clock.advance(600)
    assert texts(emulator, MANAGER) == ["[ESCALATED 15m] [CRIT] db1/app.db: Disk full"]
    assert len(texts(emulator, ONCALL)) == 1
    stats = n.stats()
    assert (stats["escalations"], stats["escalated"]) == (1, 1)


def test_an_acknowledged_alert_never_escalates(make, emulator, clock) -> None:
    n = make(routes=ESCALATING)
    n.alert("Disk full", severity="critical")
    settle(n)
    code = code_of(texts(emulator, ONCALL)[0])
    clock.advance(14 * 60)
    result = n.ack(code.lower().replace("0", "o"))  # as typed on a phone
    assert result.status == "acked" and result.ok and result.escalation.closed_by == "library"
    again = n.ack(code)
    assert again.status == "closed" and again.ok and again.escalation.state == "acked"
    clock.advance(3600)
    n.tick(force_sweep=True)
    settle(n)
    assert texts(emulator, MANAGER) == []
    assert (n.stats()["acked"], n.stats()["escalated"]) == (1, 0)


def test_a_resolved_alert_never_escalates(make, emulator, clock) -> None:
    n = make(routes=ESCALATING)
    n.alert("Disk full", severity="critical", key="disk/db1")
    assert n.resolve("disk/db1") is True  # waits for the alert to be stored first
    assert n.resolve("disk/db1") is False
    settle(n)
    assert len(texts(emulator, ONCALL)) == 1
    clock.advance(3600)
    n.tick(force_sweep=True)
    settle(n)
    assert texts(emulator, MANAGER) == []


def test_only_alerts_of_an_escalating_route_carry_a_code(make, emulator, clock) -> None:
    n = make(routes=ESCALATING)
    n.alert("slow queries", severity="error")
    settle(n)
    assert texts(emulator, ONCALL) == ["[ERROR] db1: slow queries"]
    clock.advance(3600)
    n.tick(force_sweep=True)
    settle(n)
    assert texts(emulator, MANAGER) == [] and n.stats()["escalations"] == 0
    plain = make()  # no route escalates: no code, nothing looked up
    plain.alert("Disk full", severity="critical")
    settle(plain)
    assert texts(emulator, ONCALL)[-1] == "[CRIT] db1: Disk full"


def test_the_code_is_counted_in_the_segment_budget(make, emulator) -> None:
    n = make(routes=ESCALATING, max_segments=1)
    n.alert("x" * 400, severity="critical")
    settle(n)
    (sent,) = texts(emulator, ONCALL)
    assert count_segments(sent).segments == 1 and sent.endswith(" ack:" + code_of(sent)) and "..." in sent


def test_a_repeat_in_a_new_window_carries_the_open_code_and_does_not_escalate_twice(make, emulator, clock):
    n = make(routes=ESCALATING, dedup_window=60)
    n.alert("Disk full", severity="critical")
    settle(n)
    clock.advance(120)  # the window closed quiet: the next one pages again
    n.tick(force_sweep=True)
    n.alert("Disk full", severity="critical")
    settle(n)
    first, second = texts(emulator, ONCALL)
    assert code_of(first) == code_of(second)
    clock.advance(3600)
    n.tick(force_sweep=True)
    settle(n)
    assert len(texts(emulator, MANAGER)) == 1
    assert n.stats()["escalations"] == 1


def test_wrong_codes_are_refused_counted_and_limited_per_client(make, emulator, clock) -> None:
    n = make(routes=ESCALATING)
    n.alert("Disk full", severity="critical")
    settle(n)
    code = code_of(texts(emulator, ONCALL)[0])
    wrong = "Z" * 6 if code != "Z" * 6 else "Y" * 6
    results = [n.ack(wrong, client="mallory").status for _ in range(FAILED_TRIES + 2)]
    assert results == ["unknown"] * FAILED_TRIES + ["limited"] * 2
    # the right code is not even looked at for mallory now; another client is not limited
    assert n.ack(code, client="mallory").status == "limited"
    assert n.ack(code, client="alice").status == "acked"
    with pytest.raises(ValueError, match=r"^code='nope': must be the 6 characters"):
        n.ack("nope")
    assert n.stats()["ack_refused"] == FAILED_TRIES + 2 + 1 + 1
    clock.advance(60)  # the allowance comes back
    assert n.ack(wrong, client="mallory").status == "unknown"


def test_an_alert_naming_its_groups_still_escalates_by_the_routes(make, emulator, clock) -> None:
    n = make(routes=ESCALATING)
    n.alert("Disk full", severity="critical", groups=["managers"])  # say, a webhook's groups label
    settle(n)
    assert " ack:" in texts(emulator, MANAGER)[0]


def test_route_escalation_settings_are_checked_and_named() -> None:
    from sslsms_notify.alerting import Route
    from sslsms_notify.config.rules import Routes

    route = Route.parse({"groups": ["oncall"], "escalate_after": "15m", "escalate_to": ["managers"]})
    assert (route.escalate_after, route.escalate_to) == (900, ("managers",))
    with pytest.raises(ValueError, match=r"routes\[0\]\.escalate_after='soon': must be a duration"):
        Routes().check("routes", [{"groups": ["a"], "escalate_after": "soon", "escalate_to": ["b"]}])
    with pytest.raises(ValueError, match=r"escalate_after and escalate_to go together"):
        Routes().check("routes", [{"groups": ["a"], "escalate_after": "15m"}])


def test_a_tail_is_kept_when_the_text_alone_fits_and_with_it_would_not() -> None:
    """The cut makes room for the tail (an ack code, a summary's "(last HH:MM)")."""
    from sslsms_notify.alerting import Severity
    from sslsms_notify.alerting.formatting import format_summary, with_ack_code

    text = "[CRIT] " + "y" * 150  # fits one SMS alone
    coded = with_ack_code(text, "4F2K9M", max_segments=1)
    assert coded.endswith("... ack:4F2K9M") and count_segments(coded).segments == 1
    summary = format_summary(Severity.CRITICAL, text, 3, 0.0, 7200.0, max_segments=1)
    assert summary.endswith(")") and "(last " in summary and count_segments(summary).segments == 1


# -- the records in a Redis spool, moved back -------------------------------------------------
def test_on_call_records_opened_in_the_spool_move_back_by_their_own_rules(redis_url, tmp_path) -> None:
    from sslsms_notify.stores.records import Escalation, Handoff, Heartbeat
    from sslsms_notify.stores.redis import RedisStore

    store = RedisStore(redis_url, spool=tmp_path / "spool.db")
    try:
        now = store.now()
        beat = Heartbeat(
            "backup", 60.0, 0.0, now - 100, now - 40, now - 40, "", ("oncall",), ("880",), now - 900
        )
        opened = Escalation(
            "4F2K9M", "fp:x", "open", now - 10, 900.0, now + 890, "[CRIT] x", ("880",), "", 0.0
        )

        def shared(tx) -> None:
            tx.heartbeats.put("backup", beat)  # Redis paged [MISSED] 40 s ago
            tx.escalations.put("4F2K9M", opened)

        store.transact(shared)

        def spooled(tx) -> None:  # meanwhile, through the spool: a ping, an ack, a handoff
            tx.heartbeats.put(
                "backup", Heartbeat("backup", 60.0, 0.0, now - 5, now + 55, 0.0, "", (), (), now - 900)
            )
            acked = Escalation(
                "4F2K9M", "fp:x", "acked", now - 10, 900.0, now + 86400, "[CRIT] x", ("880",), "cli", now - 2
            )
            tx.escalations.put("4F2K9M", acked)
            tx.handoffs.put("0Abc", Handoff("0Abc", "secondary", now, now + 8 * 86400))

        store.spool().transact(spooled)
        store.move_spool()

        def read(tx):
            tx.heartbeats.load(["backup"])
            tx.escalations.load(["4F2K9M"])
            tx.handoffs.load(["0Abc"])
            return tx.heartbeats.get("backup"), tx.escalations.get("4F2K9M"), tx.handoffs.get("0Abc")

        heartbeat, escalation, handoff = store.transact(read)
        assert heartbeat.last_ping == now - 5  # the later ping is the state now,
        assert heartbeat.missed_at == now - 40  # and the [MISSED] Redis paged waits for its [RECOVERED]
        assert escalation.state == "acked" and escalation.closed_by == "cli"  # closed on either side: closed
        assert handoff is not None and handoff.account == "secondary"
        assert store.spool().transact(read) == (None, None, None)
    finally:
        store.close()
