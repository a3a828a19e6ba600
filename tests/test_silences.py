"""Silences: matchers, durations, the holds at intake, and the one SMS per group at the end.

The pipeline cases run on a clock the tests move (memory store, threads off); the store
cases run the same decisions on memory, a real SQLite file and a real Redis server with
real time (Redis keeps its own clock). Counts are exact, at the emulator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.alerting.decisions import Hit, IdBook, Policy, apply_intake, sweep_all, window_key
from sslsms_notify.alerting.holds import Facts
from sslsms_notify.alerting.silences import (
    MAX_DURATION,
    UnknownSilenceError,
    add_silence,
    expire_silence,
    list_silences,
    parse_duration,
    parse_matcher,
    parse_matchers,
)
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator
from sslsms_notify.outcomes import Outcome
from sslsms_notify.stores import MemoryStore
from sslsms_notify.stores.redis import RedisStore
from sslsms_notify.stores.sqlite import SQLiteStore

from .conftest import FAST_RETRY, Clock

ONCALL, DBA = "01711111111", "01811111111"


def bd(number: str) -> str:
    return "880" + number[1:]


@pytest.fixture
def make(emulator: GatewayEmulator, clock: Clock) -> Iterator:
    made: list[Notifier] = []

    def factory(store: object = None, **kwargs: object) -> Notifier:
        transport = EmulatorTransport(emulator)
        client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=transport, retry=FAST_RETRY)
        kwargs.setdefault("groups", {"oncall": [ONCALL], "dba": [DBA]})
        kwargs.setdefault("default_groups", ["oncall", "dba"])
        kwargs.setdefault("per_recipient_limit", None)
        kwargs.setdefault("host", "db1")
        kwargs.setdefault("dispatch", DispatchPolicy(tps=1000, backoff=1.0))
        notifier = Notifier(
            client,
            store=store if store is not None else MemoryStore(clock=clock),
            clock=clock,
            start=False,
            close_at_exit=None,
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


# -- matchers and durations --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("written", "shown"),
    [
        ("alertname=DiskFull", 'alertname="DiskFull"'),
        ('alertname="Disk full"', 'alertname="Disk full"'),
        ("instance !~ 'x'", "instance!~\"'x'\""),
        ('source=~"app\\.db.*"', 'source=~"app\\.db.*"'),
        ("severity=crit", 'severity="critical"'),
        ("severity!=WARN", 'severity!="warning"'),
        ('text="say \\"hi\\""', 'text="say \\"hi\\""'),
        ('key="ends with \\\\"', 'key="ends with \\\\"'),
        ("tag!=", 'tag!=""'),
    ],
)
def test_a_matcher_is_written_back_as_it_parses(written: str, shown: str) -> None:
    matcher = parse_matcher(written)
    assert str(matcher) == shown
    assert parse_matcher(str(matcher)) == matcher


def test_a_regex_is_anchored_at_both_ends() -> None:
    matcher = parse_matcher('source=~"app\\.db.*"')
    assert matcher.test(("app.db.pool",)) and matcher.test(("app.db",))
    assert not matcher.test(("my.app.db",)) and not matcher.test(("appxdb",))
    negative = parse_matcher('instance!~"db[0-9]+"')
    assert negative.test(("web1",)) and not negative.test(("db12",))


def test_tag_matches_if_any_tag_does_and_its_negation_if_none_does() -> None:
    assert parse_matcher("tag=db").test(("web", "db"))
    assert not parse_matcher("tag!=db").test(("web", "db"))
    assert parse_matcher("tag!=db").test(("web",))


@pytest.mark.parametrize(
    ("matchers", "message"),
    [
        (["alertname~x"], "matchers[0]='alertname~x': must be name=value, name!=value, name=~regex or"),
        (["ok=1", "=x"], "matchers[1]='=x': must be name=value"),
        (["severity=page"], "matchers[0]='severity=page': severity must be one of debug, info"),
        (['a=~"(x"'], "matchers[0]='a=~\"(x\"': not a regular expression: missing )"),
        (['a="open'], "matchers[0]='a=\"open': a quoted value must end with a double quote"),
        (['a="in"side"'], 'matchers[0]=\'a="in"side"\': a double quote inside a quoted value'),
        ([], "matchers: give at least one matcher"),
        (['text=~".*"', "tag!=x"], "matchers: at least one matcher must not match the empty string"),
        ("alertname=x", "matchers: must be a list of matchers"),
        ([5], "matchers[0]=5: must be name=value"),
    ],
)
def test_bad_matchers_are_one_line_naming_the_matcher(matchers: object, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_matchers(matchers)  # type: ignore[arg-type]
    assert str(refused.value).startswith(message), str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1.5h", 5400), ("30d", MAX_DURATION)],
)
def test_durations(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize(
    ("written", "rule"),
    [
        ("45d", "must be at most 30d"),
        ("30d1s", "must be at most 30d"),
        ("0s", "it must be longer than 0"),
        ("2", "must be a duration like 30m, 2h, 1d or 1h30m"),
        ("2 hours", "must be a duration like"),
        (-5, "it must be longer than 0"),
        (True, "must be a duration like"),
    ],
)
def test_bad_durations_name_the_field(written: object, rule: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_duration(written, "--for")
    assert str(refused.value).startswith(f"--for={written!r}: ") and rule in str(refused.value)


# -- the pipeline, on a clock the test moves ------------------------------------------------------
def test_a_silence_holds_its_alerts_then_each_group_gets_one_sms(make, emulator, clock) -> None:
    n = make()
    silence_id = n.silence('source=~"app\\.db.*"', duration="1h", comment="db migration")
    tickets = []
    for i in range(30):
        tickets.append(n.submit(f"replica lag {i} s", source="app.db.replica"))
    for _ in range(10):
        tickets.append(n.submit("primary unreachable", severity="critical", source="app.db.primary"))
    web = n.submit("web1 slow", source="app.web")
    settle(n)
    assert {t.status for t in tickets} == {Outcome.SILENCED}
    assert web.status is Outcome.QUEUED
    assert texts(emulator, ONCALL) == texts(emulator, DBA) == ["[ERROR] db1/app.web: web1 slow"]
    [info] = n.silences()
    assert (info.id, info.held, info.groups) == (silence_id, 40, {"oncall": 40, "dba": 40})
    assert n.stats()["silenced"] == 40
    clock.advance(3599)
    settle(n)
    assert len(emulator.messages()) == 2  # not yet
    clock.advance(1)
    settle(n)
    summary = (
        "[SILENCE ENDED] db migration: 40 alerts held (2 kinds): "
        "[ERROR] db1/app.db.replica: replica lag 0 s | [CRIT] db1/app.db.primary: primary unreachable"
    )
    assert texts(emulator, ONCALL)[1:] == texts(emulator, DBA)[1:] == [summary]
    clock.advance(60)
    settle(n)
    assert len(emulator.messages()) == 4
    assert n.silences() == []
    assert n.stats()["hold_summaries"] == 2
    # the silence is over: the same alert pages again
    again = n.submit("primary unreachable", severity="critical", source="app.db.primary")
    settle(n)
    assert again.status is Outcome.QUEUED
    assert texts(emulator, ONCALL)[-1] == "[CRIT] db1/app.db.primary: primary unreachable"


def test_nothing_held_nothing_sent(make, emulator, clock) -> None:
    n = make()
    n.silence("alertname=DiskFull", duration="10m")
    n.submit("unrelated")
    settle(n)
    clock.advance(601)
    settle(n)
    assert len(emulator.messages()) == 2  # the unrelated alert, to each group
    assert n.stats()["hold_summaries"] == 0


def test_expire_ends_it_now_and_unknown_ids_are_refused(make, emulator, clock) -> None:
    n = make()
    silence_id = n.silence('text=~".*down.*"', "group=oncall", duration="2h")
    n.submit("db1 down")  # matches for oncall only: dba is paged at once
    settle(n)
    assert texts(emulator, DBA) == ["[ERROR] db1: db1 down"] and texts(emulator, ONCALL) == []
    ended = n.expire_silence(silence_id)
    assert ended.held == 1 and ended.ends_at == clock.now
    settle(n)
    # no comment: the matchers say which silence it was
    assert texts(emulator, ONCALL) == [
        '[SILENCE ENDED] text=~".*down.*", group="oncall": 1 alert held (1 kind): [ERROR] db1: db1 down'
    ]
    with pytest.raises(UnknownSilenceError, match=r"id='.+': no active silence has this id"):
        n.expire_silence(silence_id)
    with pytest.raises(UnknownSilenceError):
        n.expire_silence("nosuchid")


@pytest.mark.parametrize(
    ("matchers", "alert", "silenced"),
    [
        (["key=db1/disk"], {"key": "db1/disk"}, True),
        (["key=db1/disk"], {}, False),
        (['key=""', "source=cron"], {"source": "cron"}, True),
        (["severity=warning"], {"severity": "warn"}, True),
        (["severity=warning"], {"severity": "error"}, False),
        (["severity!=critical", "source=x"], {"severity": "error", "source": "x"}, True),
        (["tag=db"], {"tags": ["web", "db"]}, True),
        (["tag!=db", "source=x"], {"tags": ["web", "db"], "source": "x"}, False),
        (["alertname=DiskFull"], {"labels": {"alertname": "DiskFull"}}, True),
        (["alertname=DiskFull", "instance=~db.*"], {"labels": {"alertname": "X", "instance": "db1"}}, False),
        (["alertname=X", 'instance=""'], {"labels": {"alertname": "X"}}, True),  # a missing label is ""
        (['text=~"disk .* full"'], {}, False),
        (['text=~"disk .* full"'], {"text": "disk /var full"}, True),
    ],
)
def test_what_each_field_matches(make, emulator, matchers, alert, silenced) -> None:
    n = make()
    n.silence(*matchers, duration="1h")
    options = dict(alert)
    text = options.pop("text", "disk full")
    ticket = n.submit(text, **options)
    settle(n)
    assert ticket.status is (Outcome.SILENCED if silenced else Outcome.QUEUED)
    assert len(emulator.messages()) == (0 if silenced else 2)


def test_webhook_notifications_count_once_and_the_resolve_tells_the_end(make, emulator, clock) -> None:
    n = make()
    n.silence("alertname=DiskFull", duration="1h", comment="disk swap")
    labels = {"alertname": "DiskFull", "instance": "db1"}
    common = {"severity": "critical", "source": "alertmanager/sms", "labels": labels, "host": ""}
    for _ in range(3):  # Alertmanager re-sends the group
        n.submit("DiskFull (db1): 97%", lifecycle="am:f1@t0", **common)
    for _ in range(2):
        n.submit("DiskFull (db1): 97%", lifecycle="am:f1@t0", resolved=True, **common)
    settle(n)
    assert n.silences()[0].held == 2
    clock.advance(3600)
    settle(n)
    assert texts(emulator, ONCALL) == [
        "[SILENCE ENDED] disk swap: 2 alerts held (1 kind): [RESOLVED] alertmanager/sms: DiskFull (db1): 97%"
    ]


def test_the_silence_ending_last_holds_an_alert_two_match(make, emulator, clock) -> None:
    n = make(default_groups=["oncall"])
    n.silence("source=app", duration="10m", comment="short")
    n.silence("source=app", "severity=error", duration="1h", comment="long")
    n.submit("x", source="app")
    settle(n)
    assert sorted((s.comment, s.held) for s in n.silences()) == [("long", 1), ("short", 0)]
    clock.advance(601)
    settle(n)
    assert texts(emulator, ONCALL) == []
    clock.advance(3000)
    settle(n)
    assert texts(emulator, ONCALL) == ["[SILENCE ENDED] long: 1 alert held (1 kind): [ERROR] db1/app: x"]


def test_a_memory_pipeline_that_closes_says_what_its_silences_held(make, emulator) -> None:
    n = make(default_groups=["oncall"])
    n.silence("source=app", duration="1h", comment="deploy")
    n.submit("boom", source="app")
    n.tick()
    assert n.close(5)
    assert texts(emulator, ONCALL) == ["[SILENCE ENDED] deploy: 1 alert held (1 kind): [ERROR] db1/app: boom"]


def test_the_end_sms_stays_within_the_segment_limit(make, emulator, clock) -> None:
    n = make(default_groups=["oncall"], max_segments=1)
    n.silence("source=app", duration="1h", comment="c" * 150)
    for i in range(8):
        n.submit(f"distinct failure number {i} " + "x" * 40, source="app", key=f"k{i}")
    settle(n)
    clock.advance(3600)
    settle(n)
    [sms] = emulator.messages(ONCALL)
    assert sms.segments == 1
    assert sms.text.startswith("[SILENCE ENDED] " + "c" * 57 + "...: 8 alerts held (8 kinds): ")
    assert sms.text.endswith(" more")


# -- the same decisions on every store ------------------------------------------------------------
@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path) -> Iterator:
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "sqlite":
        backend = SQLiteStore(f"sqlite:///{tmp_path}/state.db")
    else:
        backend = RedisStore(request.getfixturevalue("redis_url"), spool=tmp_path / "spool.db")
    yield backend
    backend.close()


def held_hit(text: str, group: str, alert: int, *, source: str = "app.db") -> Hit:
    facts = Facts(text, source, "", "error", 40, (), {}, f"kind-{text}")
    return Hit(window_key(group, 40, text), group, (bd(ONCALL) if group == "oncall" else bd(DBA),), 1,
               f"[ERROR] {text}", f"[ERROR] {text}", alert, facts=facts)  # fmt: skip


def test_silences_are_records_every_backend_keeps(store) -> None:
    policy = Policy(dedup_window=60, cap_limit=None)
    info = add_silence(store, ['source=~"app\\.db.*"'], 1.0, "on every store")
    assert [s.id for s in list_silences(store)] == [info.id]
    hits = [held_hit("a", "oncall", 0), held_hit("a", "dba", 0), held_hit("b", "oncall", 1, source="web")]
    report = store.transact(lambda tx: apply_intake(tx, hits, policy, IdBook()))
    assert (report.silenced, report.queued) == (1, 1)
    assert report.alerts[0].status == "silenced" and report.alerts[1].status == "queued"
    [listed] = list_silences(store)
    assert (listed.held, listed.groups) == (1, {"oncall": 1, "dba": 1})
    deadline = time.monotonic() + 10
    sent = 0
    while time.monotonic() < deadline and not sent:
        time.sleep(0.05)
        sent = store.transact(lambda tx: sweep_all(tx, policy, IdBook())).hold_summaries
    assert sent == 2
    assert store.transact(lambda tx: sweep_all(tx, policy, IdBook())).hold_summaries == 0
    summaries = sorted((i.msisdn, i.text) for i in store.outbox_list() if "SILENCE" in i.text)
    text = "[SILENCE ENDED] on every store: 1 alert held (1 kind): [ERROR] a"
    assert summaries == [(bd(ONCALL), text), (bd(DBA), text)]
    assert list_silences(store) == []
    with pytest.raises(UnknownSilenceError):
        expire_silence(store, info.id)


def test_two_pipelines_on_one_sqlite_file_send_each_end_sms_once(tmp_path, sslsms_gateway) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    client = GatewayClient(sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url)
    pipelines = [
        Notifier(
            client,
            groups={"oncall": [ONCALL], "dba": [DBA]},
            default_groups=["oncall", "dba"],
            store=url,
            per_recipient_limit=None,
            close_at_exit=None,
            host="h",
        )
        for _ in range(2)
    ]
    try:
        pipelines[0].silence("source=batch", duration=1.5, comment="both")
        threads = [
            threading.Thread(target=lambda n=n: [n.alert("job failed", source="batch") for _ in range(20)])
            for n in pipelines
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert all(n.sync(10) for n in pipelines)
        deadline = time.monotonic() + 15
        while len(sslsms_gateway.emulator.messages()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # both pipelines keep sweeping: nothing more may come
        text = "[SILENCE ENDED] both: 40 alerts held (1 kind): [ERROR] h/batch: job failed"
        assert sorted((m.msisdn, m.text) for m in sslsms_gateway.emulator.messages()) == [
            (bd(ONCALL), text),
            (bd(DBA), text),
        ]
    finally:
        for n in pipelines:
            n.close(5)
