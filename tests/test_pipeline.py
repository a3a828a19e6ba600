"""The alert pipeline end to end against the emulator, with a clock the tests move."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy, Route, Severity
from sslsms_notify.alerting.alert import Alert, template_of
from sslsms_notify.alerting.dispatch import IN_CALL_ATTEMPTS
from sslsms_notify.alerting.formatting import format_parts
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator
from sslsms_notify.gateway.text import count_segments
from sslsms_notify.stores import MemoryStore

from .conftest import FAST_RETRY, Clock

ONCALL = ["01711111111", "01711111112", "01711111113"]
DBAS = ["01811111111", "01711111111"]  # 01711111111 is in both groups
MANAGERS = ["01911111111"]


def bd(number: str) -> str:
    return "880" + number[1:]


@pytest.fixture
def make(emulator: GatewayEmulator, clock: Clock):
    made: list[Notifier] = []

    def factory(**kwargs) -> Notifier:
        client = GatewayClient(
            DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator), retry=FAST_RETRY
        )
        kwargs.setdefault("groups", {"oncall": ONCALL, "dbas": DBAS, "managers": MANAGERS})
        kwargs.setdefault("default_groups", ["oncall"])
        kwargs.setdefault("per_recipient_limit", None)
        kwargs.setdefault("host", "db1")
        kwargs.setdefault("dispatch", DispatchPolicy(tps=1000, backoff=1.0))
        notifier = Notifier(
            client,
            store=MemoryStore(clock=clock),
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


def texts_for(emulator: GatewayEmulator, number: str) -> list[str]:
    return [m.text for m in emulator.messages(number)]


# -- dedup -----------------------------------------------------------------------
def test_first_alert_goes_out_at_once_and_repeats_are_counted(make, emulator, clock) -> None:
    n = make(dedup_window=300)
    for _ in range(5):
        n.alert("Disk full", severity="critical", source="app.db")
    n.flush(2)
    assert texts_for(emulator, ONCALL[0]) == ["[CRIT] db1/app.db: Disk full"]
    assert n.stats()["suppressed"] == 4
    clock.advance(120)
    n.alert("Disk full", severity="critical", source="app.db")
    n.flush(2)
    assert len(emulator.messages(ONCALL[0])) == 1
    clock.advance(181)  # the window closes with 5 repeats
    n.flush(2)
    summary = texts_for(emulator, ONCALL[0])[-1]
    assert summary.startswith("[CRIT +5 more since ") and "db1/app.db: Disk full (last " in summary
    assert n.stats()["summaries"] == 1


def test_quiet_window_closes_without_summary(make, emulator, clock) -> None:
    n = make(dedup_window=60)
    n.alert("Backup failed")
    n.flush(2)
    clock.advance(61)
    n.flush(2)
    assert len(emulator.messages(ONCALL[0])) == 1
    n.alert("Backup failed")  # a new incident: first again
    n.flush(2)
    assert len(emulator.messages(ONCALL[0])) == 2


def test_storm_gets_one_summary_per_repeat_interval(make, emulator, clock) -> None:
    n = make(dedup_window=90, repeat_interval=600)
    n.alert("API 500s")
    n.tick()
    for _ in range(30):  # 30 minutes of one alert a minute
        clock.advance(60)
        n.alert("API 500s")
        n.tick(force_sweep=True)
    n.flush(2)
    texts = texts_for(emulator, ONCALL[0])
    assert texts[0] == "[ERROR] db1: API 500s"
    counts = [t.split(" more since")[0] for t in texts[1:]]
    assert counts == ["[ERROR +2", "[ERROR +10", "[ERROR +10"]


def test_similar_messages_share_a_fingerprint(make, emulator) -> None:
    assert template_of("disk 91% on db1 id=0xdeadbeef") == template_of("disk 95% on db1 id=0xcafe")
    n = make()
    n.alert("disk 91% full on /var")
    n.alert("disk 95% full on /var")
    n.alert("replication lag 30s")
    n.flush(2)
    assert len(emulator.messages(ONCALL[0])) == 2


def test_explicit_key_wins_over_text(make, emulator) -> None:
    n = make()
    n.alert("db1 down", key="db1")
    n.alert("db1 still down!!", key="db1")
    n.flush(2)
    assert len(emulator.messages(ONCALL[0])) == 1


def test_higher_severity_is_not_hidden_by_a_lower_one(make, emulator) -> None:
    n = make()
    n.alert("db1 down", key="db1", severity="error")
    n.alert("db1 down", key="db1", severity="critical")
    n.flush(2)
    assert len(emulator.messages(ONCALL[0])) == 2


# -- routing ---------------------------------------------------------------------
def test_routes_on_severity_source_and_tags(make, emulator) -> None:
    routes = [
        Route(groups=("oncall",), min_severity=Severity.ERROR),
        Route(groups=("managers",), min_severity=Severity.CRITICAL),
        {"groups": ["dbas"], "sources": ["app.db"]},
        {"groups": ["dbas"], "tags": ["replication"]},
    ]
    n = make(routes=routes)
    n.alert("pool exhausted", severity="warning", source="app.db.pool")
    n.alert("site down", severity="critical", source="web")
    n.alert("lag", severity="warning", source="x", tags=["replication"])
    n.alert("nothing matches", severity="info", source="web")  # default group
    n.flush(2)
    assert texts_for(emulator, MANAGERS[0]) == ["[CRIT] db1/web: site down"]
    assert sorted(texts_for(emulator, DBAS[0])) == [
        "[WARN] db1/app.db.pool: pool exhausted",
        "[WARN] db1/x: lag",
    ]
    assert "[INFO] db1/web: nothing matches" in texts_for(emulator, ONCALL[1])


def test_number_in_several_groups_gets_one_sms(make, emulator) -> None:
    n = make()
    n.alert("both groups", groups=["oncall", "dbas"])
    n.flush(2)
    assert len(emulator.messages("01711111111")) == 1
    assert len(emulator.messages()) == 4  # 3 oncall + 1 more dba


def test_explicit_numbers_and_unknown_groups(make, emulator) -> None:
    n = make()
    n.alert("direct", groups=["01555555555"])
    n.flush(2)
    assert texts_for(emulator, "01555555555") == ["[ERROR] db1: direct"]
    with pytest.raises(ValueError, match="unknown group 'nope'"):
        n.alert("x", groups=["nope"])
    with pytest.raises(ValueError, match="severity 'loud'"):
        n.alert("x", severity="loud")
    with pytest.raises(ValueError, match="text='': must be a non-empty string"):
        n.alert("")


def test_bad_configuration_names_the_field() -> None:
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport())
    with pytest.raises(ValueError, match=r"groups.oncall\[1\] '123'"):
        Notifier(client, groups={"oncall": ["01711111111", "123"]}, start=False, close_at_exit=None)
    with pytest.raises(ValueError, match="route names unknown group 'ops'"):
        Notifier(
            client,
            groups={"oncall": ONCALL},
            routes=[{"groups": ["ops"]}],
            start=False,
            close_at_exit=None,
        )
    with pytest.raises(ValueError, match="at least one phone"):
        Notifier(client, start=False, close_at_exit=None)


# -- group_wait ------------------------------------------------------------------
def test_group_wait_coalesces_distinct_alerts(make, emulator, clock) -> None:
    n = make(group_wait=30)
    n.alert("primary down")
    n.alert("replica down")
    n.alert("cache miss storm")
    n.tick(force_sweep=True)
    assert emulator.messages() == []
    clock.advance(31)
    n.flush(2)
    [message] = texts_for(emulator, ONCALL[0])
    assert message.startswith("[3 alerts] [ERROR] db1: primary down | [ERROR] db1: replica down")


# -- throttling -----------------------------------------------------------------
def test_per_recipient_cap_folds_overflow_into_a_digest(make, emulator, clock) -> None:
    n = make(per_recipient_limit=2, per_recipient_period=3600)
    for i in range(5):
        n.alert(f"distinct problem {'abcde'[i]}")
    n.flush(2)
    assert len(emulator.messages(ONCALL[0])) == 2
    assert n.stats()["throttled"] == 3 * len(ONCALL)
    clock.advance(1800)  # one SMS worth of allowance comes back
    n.flush(2)
    digest = texts_for(emulator, ONCALL[0])[-1]
    assert digest.startswith("[digest: 3 held since ") and "problem e" in digest
    stats = n.stats()
    assert stats["folded"] == 3 * len(ONCALL) and stats["digests"] == len(ONCALL)


def test_global_tps_is_paced_never_4031(emulator) -> None:
    emulator.config.tps_limit = 5
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator), retry=FAST_RETRY)
    n = Notifier(
        client,
        groups={"pair": ["01711111111", "01811111111"]},
        tps=5,
        per_recipient_limit=None,
        close_at_exit=None,
    )
    for i in range(12):
        n.alert(f"alert number {'abcdefghijkl'[i]}")
        n.flush(5)  # one bulk request per alert
    n.close(5)
    assert 4031 not in emulator.requests
    assert len(emulator.messages()) == 24


# -- dispatch and fallback --------------------------------------------------------
def test_failed_bulk_falls_back_to_singles(make, emulator) -> None:
    n = make()
    emulator.faults.api_code(5000, count=IN_CALL_ATTEMPTS)  # the bulk, and its one quick retry
    n.alert("fallback please")
    n.flush(2)
    assert sorted(m.msisdn for m in emulator.messages()) == sorted(bd(x) for x in ONCALL)
    assert {m.endpoint for m in emulator.messages()} == {"single"}
    assert n.stats()["fallbacks"] == 1


def test_invalid_number_does_not_block_the_others(make, emulator) -> None:
    emulator.config.blocked_msisdns.add(bd(ONCALL[1]))
    n = make()
    n.alert("partial")
    n.flush(2)
    assert len(emulator.messages()) == 2
    stats = n.stats()
    assert stats["sent"] == 2 and stats["failed"] == 1 and stats["dead"] == 1
    [dead] = n.store.outbox_list()
    assert dead.msisdn == bd(ONCALL[1]) and "Blocked MSISDN" in dead.last_error


def test_all_blocked_bulk_dead_letters_each_after_single_fallback(make, emulator) -> None:
    emulator.config.blocked_msisdns.update(bd(x) for x in ONCALL)
    n = make()
    n.alert("nobody can get this")
    n.flush(2)
    assert emulator.messages() == []
    assert n.stats()["failed"] == 3 and n.stats()["pending"] == 0


def test_dynamic_request_for_different_texts(make, emulator) -> None:
    n = make(groups={"solo": ["01711111111"], "duo": ["01811111111"]}, default_groups=["solo"])
    n.alert("one", groups=["solo"])
    n.alert("two", groups=["duo"])
    n.flush(2)
    assert {m.endpoint for m in emulator.messages()} == {"dynamic"}
    assert n.stats()["requests"] == 1


def test_unknown_outcome_resends_the_same_bulk_once(make, emulator, clock) -> None:
    n = make()
    # every attempt reaches the gateway, but no answer comes back
    emulator.faults.drop(count=IN_CALL_ATTEMPTS, after_processing=True)
    n.alert("exactly once")
    n.flush(0.5)
    assert n.stats()["pending"] == 3
    clock.advance(5)
    n.flush(2)
    assert len(emulator.messages()) == 3  # never twice
    assert n.stats()["sent"] == 3 and n.stats()["fallbacks"] == 0


def test_gateway_outage_then_recovery_delivers_once(make, emulator, clock) -> None:
    n = make()
    emulator.faults.http_error(503, count=10_000)
    for i in range(20):
        n.alert(f"outage alert {'abcdefghijklmnopqrst'[i]}")
    n.flush(0.5)
    assert emulator.messages() == []
    emulator.faults.clear()
    clock.advance(120)
    n.flush(2)
    assert len(emulator.messages()) == 20 * len(ONCALL)
    assert n.stats()["pending"] == 0


def test_too_old_sms_becomes_a_dead_letter(make, emulator, clock) -> None:
    n = make(dispatch=DispatchPolicy(tps=1000, max_age=60))
    emulator.faults.http_error(503, count=10_000)
    n.alert("will expire")
    n.flush(0.2)
    clock.advance(61)
    n.flush(0.5)
    assert n.stats()["dead"] == 3 and n.stats()["failed"] == 3


def test_auth_failure_keeps_sms_for_later(make, emulator, clock) -> None:
    n = make()
    emulator.faults.api_code(4001, count=1)
    n.alert("after creds fixed")
    n.flush(0.3)
    assert n.stats()["pending"] == 3
    clock.advance(61)  # the pause after a refusal (auth_pause) is over
    n.flush(2)
    assert len(emulator.messages()) == 3


# -- formatting -------------------------------------------------------------------
def test_format_fits_budget_and_keeps_bangla_whole() -> None:
    text = format_parts(Severity.CRITICAL, "db1", "app", "ডাটাবেস সার্ভার সাড়া দিচ্ছে না " * 10, 2)
    assert text.startswith("[CRIT] db1/app: ডাটাবেস") and text.endswith("…")
    assert count_segments(text).segments <= 2
    long = format_parts(Severity.ERROR, "h", "", "x" * 2000, 1)
    assert count_segments(long).segments == 1 and long.endswith("...")


# -- the worker -------------------------------------------------------------------
def test_full_queue_drops_and_counts(emulator) -> None:
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator))
    n = Notifier(client, recipients=ONCALL, queue_size=10, start=False, close_at_exit=None)
    accepted = [n.alert(f"a{i}") for i in range(15)]
    assert accepted.count(True) == 10
    assert n.stats()["dropped"] == 5 and n.stats()["received"] == 15
    n.close(2)


def test_many_threads_background_worker(emulator) -> None:
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator))
    n = Notifier(client, recipients=ONCALL, per_recipient_limit=None, close_at_exit=None)

    def produce(worker: int) -> None:
        for i in range(1000):
            n.alert(f"thread alert kind {'abcdefgh'[worker]}", source=f"t{i % 3}")

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert n.flush(10)
    stats = n.stats()
    assert stats["received"] == 8000 and stats["dropped"] == 0
    assert stats["suppressed"] == 8000 - 24
    assert len(emulator.messages()) == 24 * len(ONCALL)
    n.close(5)


def test_alert_after_close_is_dropped_not_raised(emulator) -> None:
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator))
    n = Notifier(client, recipients=ONCALL, close_at_exit=None)
    n.close(1)
    assert n.alert("late") is False
    assert n.close(1) is True


def test_asyncio_path(emulator) -> None:
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator))
    n = Notifier(client, recipients=ONCALL, close_at_exit=None)

    async def main() -> None:
        n.alert("from a coroutine")
        assert await n.aflush(5)
        assert await n.aclose(5)

    asyncio.run(main())
    assert len(emulator.messages()) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_gets_its_own_worker(sslsms_gateway) -> None:
    n = Notifier(sslsms_gateway.client(), recipients=["01711111111"], close_at_exit=None)
    n.alert("from the parent")
    assert n.flush(5)
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            n.alert("from the child")
            code = 0 if n.flush(5) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    n.alert("parent again")
    assert n.flush(5)
    texts = sorted(m.text.split(": ", 1)[1] for m in sslsms_gateway.emulator.messages())
    assert texts == ["from the child", "from the parent", "parent again"]
    n.close(2)


def test_with_routes_an_alert_matching_none_pages_nobody_and_is_counted(emulator, clock) -> None:
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator), retry=FAST_RETRY)
    n = Notifier(
        client,
        groups={"oncall": ONCALL, "managers": MANAGERS},
        routes=[{"groups": ["oncall"], "min_severity": "error"}],  # a filter, as operators read it
        per_recipient_limit=None,
        store=MemoryStore(clock=clock),
        clock=clock,
        start=False,
        close_at_exit=None,
    )
    n.alert("disk at 80%", severity="warning")
    ticket = n.submit("cpu hot", severity="info")
    n.alert("disk full", severity="error")
    n.flush(2)
    assert ticket.status == "unrouted"
    assert [m.text for m in emulator.messages(ONCALL[0])] == ["[ERROR] " + n.host + ": disk full"]
    assert emulator.messages(MANAGERS[0]) == []
    assert n.stats()["unrouted"] == 2
    n.close(0)
    catch_all = Notifier(
        client,
        groups={"oncall": ONCALL, "managers": MANAGERS},
        routes=[{"groups": ["managers"], "min_severity": "critical"}, {"groups": ["oncall"]}],
        start=False,
        close_at_exit=None,
    )
    assert catch_all.router.group_names(Alert(text="x", severity=Severity.INFO)) == ("oncall",)
    catch_all.close(0)


def test_summary_and_resolved_wording() -> None:
    from sslsms_notify.alerting.formatting import format_parts, format_summary

    at = 1_800_000_000.0  # any instant; the wording is what matters
    same_minute = format_summary(Severity.ERROR, "[ERROR] db1: disk full", 4, at, at + 5, max_segments=2)
    assert same_minute.startswith("[ERROR +4 more since ") and same_minute.endswith("db1: disk full")
    later = format_summary(Severity.ERROR, "[ERROR] db1: disk full", 4, at, at + 600, max_segments=2)
    assert later.endswith("db1: disk full (last " + later.rsplit("(last ", 1)[1])
    assert "(last " in later
    resolved = format_parts(Severity.CRITICAL, "", "alertmanager/sms", "DiskFull (db1)", 2, resolved=True)
    assert resolved == "[RESOLVED] alertmanager/sms: DiskFull (db1)"
    # a text of one's own that starts with the word is just a text
    mine = format_parts(Severity.ERROR, "", "cron", "[RESOLVED] is how we tag it", 2)
    assert mine == "[ERROR] cron: [RESOLVED] is how we tag it"


def test_a_malformed_sms_in_the_outbox_does_not_hold_up_the_rest(make, emulator, clock) -> None:
    """An SMS the client refuses before sending (here a 21-character csms_id, written by hand)
    becomes a dead letter with the reason; the others in its batch are delivered."""
    from sslsms_notify.stores import OutboxItem, OutboxState

    n = make()
    now = clock()
    n.store.outbox_add(
        [
            OutboxItem("x" * 21, "8801711111111", "malformed id", now, now),
            OutboxItem("good1", "8801811111111", "fine one", now, now),
            OutboxItem("good2", "8801911111111", "fine two", now, now),
        ]
    )
    n.flush(2)
    assert sorted(m.text for m in emulator.messages()) == ["fine one", "fine two"]
    [dead] = n.store.outbox_list(OutboxState.DEAD)
    assert dead.csms_id == "x" * 21 and dead.last_error.startswith("refused before sending: csms_id")
