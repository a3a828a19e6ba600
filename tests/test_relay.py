"""The relay over real HTTP: intake, security, webhooks, health, metrics, timers, a real Alertmanager."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.relay.server import RelayServer
from sslsms_notify.relay.settings import RelaySettings

from .conftest import FAST_RETRY, free_port, installed

TOKEN = "relay-token-for-tests-0001"
DATA = Path(__file__).parent / "data"
PHONE, DBA = "01711111111", "01811111111"


def make_relay(gateway: EmulatorServer, store: str = "memory", **notifier_options) -> RelayServer:
    notifier_options.setdefault("per_recipient_limit", None)
    notifier_options.setdefault("dispatch", DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.2))
    notifier = Notifier(
        GatewayClient(gateway.api_token, gateway.sid, base_url=gateway.url, retry=FAST_RETRY),
        groups={"oncall": [PHONE], "dba": [DBA]},
        default_groups=["oncall"],
        store=store,
        close_at_exit=None,
        **notifier_options,
    )
    settings = RelaySettings(listen="127.0.0.1:0", tokens=(TOKEN,), max_body=4096).checked()
    return RelayServer(notifier, settings).start()


@pytest.fixture
def relay(sslsms_gateway) -> Iterator[RelayServer]:
    server = make_relay(sslsms_gateway)
    yield server
    server.stop(5)


def http(relay: RelayServer, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=relay.url, headers=headers, timeout=30)


def texts(gateway: EmulatorServer, number: str | None = None) -> list[str]:
    return [m.text for m in gateway.emulator.messages(number)]


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- our own API ------------------------------------------------------------------------
def test_alert_is_accepted_once_durable_then_sent_and_repeats_suppressed(relay, sslsms_gateway) -> None:
    with http(relay) as client:
        answer = client.post("/v1/alerts", json={"text": "db1 down", "severity": "critical", "key": "db1"})
        assert answer.status_code == 202
        body = answer.json()
        assert body["accepted"] == 1 and body["alerts"][0]["status"] == "queued"
        again = client.post(
            "/v1/alerts", json=[{"text": "db1 down", "key": "db1", "severity": "critical"}] * 3
        )
        assert [a["status"] for a in again.json()["alerts"]] == ["suppressed"] * 3
    assert wait_for(lambda: len(texts(sslsms_gateway)) == 1)
    assert texts(sslsms_gateway) == ["[CRIT] db1 down"]  # no host: the relay's name tells a phone nothing


def test_wait_reports_delivery_so_send_relay_keeps_its_exit_codes(relay, sslsms_gateway) -> None:
    with http(relay) as client:
        answer = client.post("/v1/alerts?wait=10", json={"text": "with wait", "groups": ["oncall", "dba"]})
        assert answer.status_code == 200
        body = answer.json()
        assert body["sms"] == {"delivered": 2, "pending": 0, "failed": 0}
        assert not body["auth_failed"]
        assert client.post("/v1/alerts?wait=999", json={"text": "x"}).status_code == 422


def test_refused_credentials_are_reported_at_once(sslsms_gateway) -> None:
    sslsms_gateway.emulator.faults.api_code(4001, count=50)
    relay = make_relay(sslsms_gateway)
    try:
        with http(relay) as client:
            started = time.monotonic()
            body = client.post("/v1/alerts?wait=20", json={"text": "wrong token upstream"}).json()
            assert body["auth_failed"] and body["sms"]["pending"] == 1
            assert time.monotonic() - started < 5
    finally:
        sslsms_gateway.emulator.faults.clear()
        relay.stop(1)


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"Authorization": f"Basic {TOKEN}"}, 401)],
)
def test_every_route_but_healthz_needs_the_token(relay, headers, status) -> None:
    with httpx.Client(base_url=relay.url, headers=headers) as client:
        for method, path in [("POST", "/v1/alerts"), ("POST", "/v1/alertmanager"), ("GET", "/metrics")]:
            answer = client.request(method, path, json={"text": "x"})
            assert answer.status_code == status
            assert answer.headers["www-authenticate"] == "Bearer"
        assert client.get("/healthz").status_code == 200


def test_tokens_never_reach_a_log(sslsms_gateway, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    relay = make_relay(sslsms_gateway)
    try:
        with http(relay) as client:
            client.post("/v1/alerts", json={"text": "logged?"})
            client.post("/v1/alerts", json={"text": "x", "bogus": 1})
        with http(relay, token="wrong-token-but-long-enough") as client:
            client.post("/v1/alerts", json={"text": "x"})
    finally:
        relay.stop(5)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert TOKEN not in logged and "wrong-token-but-long-enough" not in logged
    assert sslsms_gateway.api_token not in logged


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b'{"text": ""}', 422, "text"),
        (b'{"text": "x", "severity": "loud"}', 422, "severity"),
        (b'{"text": "x", "bogus": 1}', 422, "bogus"),
        (b"[]", 422, None),
        (b'{"text": "x", "groups": ["nosuchgroup"]}', 422, "groups"),
        (b'{"text": "x", "groups": ["01712345678"]}', 422, "groups"),  # numbers: see allow_numbers
        (b'[{"text": "x"}, {"text": "y", "groups": ["oncall", "dbx"]}]', 422, "[1].groups"),
    ],
)
def test_bad_bodies_get_a_status_naming_the_field(relay, body, status, field) -> None:
    with http(relay) as client:
        answer = client.post("/v1/alerts", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == status, answer.text
    if field:
        assert answer.json()["field"].endswith(field)
    if field == "groups":
        assert "group" in answer.json()["error"]


def test_body_size_is_limited_before_parsing(relay) -> None:
    with http(relay) as client:
        answer = client.post("/v1/alerts", json={"text": "x" * 5000})
    assert answer.status_code == 413


# -- webhooks --------------------------------------------------------------------------------
def test_alertmanager_webhook_fires_then_resolves(relay, sslsms_gateway) -> None:
    firing = (DATA / "alertmanager_firing.json").read_bytes()
    resolved = (DATA / "alertmanager_resolved.json").read_bytes()
    with http(relay) as client:
        assert client.post("/v1/alertmanager", content=firing).status_code == 202
        assert client.post("/v1/alertmanager", content=firing).status_code == 202  # a retry: suppressed
        assert client.post("/v1/alertmanager", content=resolved).status_code == 202
    assert wait_for(lambda: sum("[RESOLVED]" in t for t in texts(sslsms_gateway)) == 2)
    sent = [(m.msisdn, m.text) for m in sslsms_gateway.emulator.messages()]
    firing = [pair for pair in sent if "[RESOLVED]" not in pair[1]]
    # the fixture's sms_groups label names oncall and dba: one SMS each, the retry paged nobody twice
    assert len(firing) == 2 and len(set(firing)) == 2
    assert {number for number, _ in firing} == {"8801711111111", "8801811111111"}


def test_grafana_webhook(relay, sslsms_gateway) -> None:
    body = {
        "receiver": "sms",
        "status": "firing",
        "orgId": 1,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighLatency", "severity": "warning", "instance": "api-1"},
                "annotations": {"summary": "p99 latency above 2 s"},
                "fingerprint": "a1b2c3d4e5f60718",
            }
        ],
        "version": "1",
    }
    with http(relay) as client:
        assert client.post("/v1/grafana", json=body).status_code == 202
    assert wait_for(lambda: texts(sslsms_gateway))
    [text] = texts(sslsms_gateway)
    assert text.startswith("[WARN]") and "HighLatency (api-1): p99 latency above 2 s" in text


def test_grafana_texts_on_the_phone(relay, sslsms_gateway) -> None:
    without_labels = {  # refused with a 422 once, a page Grafana never retried
        "receiver": "sms\u202e-relay",
        "status": "firing",
        "alerts": [
            {"status": "firing", "annotations": {"summary": "disk \u202e%59\u202c full"}, "fingerprint": "f1"}
        ],
        "version": "1",
    }
    with http(relay) as client:
        for name in ("grafana_default_firing.json", "grafana_datasource_error.json"):
            assert client.post("/v1/grafana", content=(DATA / name).read_bytes()).status_code == 202
        assert client.post("/v1/grafana", json=without_labels).status_code == 202
    assert wait_for(lambda: len(texts(sslsms_gateway)) == 5)
    assert sorted(texts(sslsms_gateway, PHONE)) == [
        "[CRIT] grafana/sms-relay: DatasourceError (rule: High CPU): failed to execute query [A]: "
        'Post "http://prometheus:9090/api/v1/query": dial tcp 10.0.0.5:9090: connect: connection refused',
        "[ERROR] grafana/sms-relay: Alert: disk %59 full",
        "[ERROR] grafana/sms-relay: DatasourceNoData (rule: Orders queue backlog)",
        "[ERROR] grafana/sms-relay: High CPU (web1:9100): A=93.51 C=1",
        "[ERROR] grafana/sms-relay: Orders queue backlog: A=12346 B=NaN C=1",
    ]


# -- health and metrics -----------------------------------------------------------------------
def test_health_and_metrics(relay, sslsms_gateway) -> None:
    with http(relay) as client:
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["store"] == "ok"
        client.post("/v1/alerts?wait=10", json={"text": "measured", "groups": ["dba"]})
        metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert "sslsms_sms_sent_total 1.0" in text
    assert 'sslsms_group_alerts_total{group="dba"} 1.0' in text
    assert re.search(r'sslsms_gateway_request_seconds_count\{kind="\w+",outcome="ok"\} 1\.0', text)
    assert 'sslsms_relay_requests_total{code="200",route="/v1/alerts"} 1.0' in text
    assert "sslsms_outbox_pending 0.0" in text


def test_health_says_degraded_when_the_gateway_is_unreachable(sslsms_gateway) -> None:
    relay = make_relay(sslsms_gateway)
    sslsms_gateway.stop()
    try:
        with http(relay) as client:
            client.post("/v1/alerts", json={"text": "nobody answers"})
            assert wait_for(lambda: client.get("/healthz").json()["gateway"] == "unreachable")
            assert client.get("/healthz").status_code == 200  # intake still works: alerts wait
    finally:
        sslsms_gateway.start()
        relay.stop(1)


# -- timers -------------------------------------------------------------------------------------
def test_summary_due_at_t_is_sent_within_a_second_of_t(sslsms_gateway, tmp_path) -> None:
    """A storm posted, then silence: no producer runs, the relay's timers send the summary."""
    relay = make_relay(sslsms_gateway, store=f"sqlite:///{tmp_path}/timers.db", dedup_window=2)
    try:
        with http(relay) as client:
            posted = time.monotonic()
            client.post("/v1/alerts", json=[{"text": "api 500s", "key": "api"}] * 6)
        due = posted + 2.0
        assert wait_for(lambda: any("more since" in t for t in texts(sslsms_gateway)), timeout=6)
        arrived = time.monotonic()
        summary = [t for t in texts(sslsms_gateway) if "more since" in t]
        assert summary[0].startswith("[ERROR +5 more since ")
        assert arrived - due < 1.0, f"summary {arrived - due:.2f} s after it was due"
    finally:
        relay.stop(5)


def test_two_relays_on_one_redis_send_each_sms_once(sslsms_gateway, redis_url) -> None:
    one, two = make_relay(sslsms_gateway, store=redis_url), make_relay(sslsms_gateway, store=redis_url)
    try:
        with http(one) as a, http(two) as b:
            for i in range(40):
                body = {"text": f"shared alert {i}", "key": f"k{i}", "groups": ["oncall", "dba"]}
                assert a.post("/v1/alerts", json=body).status_code == 202
                assert b.post("/v1/alerts", json=body).status_code == 202  # the same alert, twice
        assert wait_for(lambda: len(sslsms_gateway.emulator.messages()) >= 80, timeout=20)
    finally:
        one.stop(5)
        two.stop(5)
    # both relays have stopped: whatever either would send, it has sent
    sent = [(m.msisdn, m.text) for m in sslsms_gateway.emulator.messages()]
    assert len(sent) == 80 and len(set(sent)) == 80


# -- a real Alertmanager -------------------------------------------------------------------------


@pytest.mark.slow
def test_real_alertmanager_pages_through_the_relay_then_resolves(sslsms_gateway, tmp_path) -> None:
    relay = make_relay(sslsms_gateway, store=f"sqlite:///{tmp_path}/am.db")
    am_port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        textwrap.dedent(
            f"""
            route:
              receiver: sms-relay
              group_by: ['alertname']
              group_wait: 1s
              group_interval: 1s
              repeat_interval: 1h
            receivers:
              - name: sms-relay
                webhook_configs:
                  - url: '{relay.url}/v1/alertmanager'
                    send_resolved: true
                    http_config:
                      authorization:
                        credentials: '{TOKEN}'
            """
        )
    )
    am = subprocess.Popen(
        [
            installed("prometheus-alertmanager", "prometheus-alertmanager"),
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = httpx.Client(base_url=f"http://127.0.0.1:{am_port}", timeout=10)
    try:
        assert wait_for(lambda: _answers(am_port) and api.get("/-/ready").status_code == 200, timeout=20)
        started = datetime.now(UTC) - timedelta(seconds=5)
        alerts = [
            {
                "labels": {
                    "alertname": "DiskFull",
                    "instance": f"db{i}",
                    "severity": "critical",
                    "sms_groups": "dba",
                },
                "annotations": {"summary": f"/var on db{i} is 97% full"},
                "startsAt": started.isoformat(),
            }
            for i in (1, 2)
        ]
        assert api.post("/api/v2/alerts", json=alerts).status_code == 200
        assert wait_for(lambda: len(texts(sslsms_gateway, DBA)) == 2, timeout=15)
        firing = sorted(texts(sslsms_gateway, DBA))
        assert firing == [
            f"[CRIT] alertmanager/sms-relay: DiskFull (db{i}): /var on db{i} is 97% full" for i in (1, 2)
        ]
        ended = datetime.now(UTC) - timedelta(seconds=1)
        for alert in alerts:
            alert["endsAt"] = ended.isoformat()
        assert api.post("/api/v2/alerts", json=alerts).status_code == 200
        assert wait_for(lambda: len(texts(sslsms_gateway, DBA)) == 4, timeout=15)
        # An absence has no event to await: watch Alertmanager's next group_interval flushes
        # (1 s) for anything it sends again, then let the relay finish what it took.
        time.sleep(2.5)
        assert relay.notifier.flush(15)
        sent = texts(sslsms_gateway, DBA)
        resolved = sorted(t for t in sent if t.startswith("[RESOLVED] "))
        assert len(sent) == 4 and resolved == [
            f"[RESOLVED] alertmanager/sms-relay: DiskFull (db{i}): /var on db{i} is 97% full" for i in (1, 2)
        ]
        assert texts(sslsms_gateway, PHONE) == []  # the sms_groups label routed it to the DBAs only
    finally:
        am.terminate()
        am.wait(10)
        relay.stop(5)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_relay_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"relay tokens\[0\]: must be at least 16 characters"):
        RelaySettings(tokens=("short",)).checked()
    with pytest.raises(ValueError, match=r"listen='nowhere': must be HOST:PORT"):
        RelaySettings(listen="nowhere", tokens=(TOKEN,)).checked()
    with pytest.raises(ValueError, match=r"\[relay\] bogus: unknown key"):
        RelaySettings.load({"bogus": 1}, environ={})
    settings = RelaySettings.load({}, environ={"SSLSMS_RELAY_TOKENS": f"{TOKEN}, {TOKEN}x"})
    assert settings.tokens == (TOKEN, TOKEN + "x") and TOKEN not in repr(settings)
    assert json.dumps(settings.listen) == '"127.0.0.1:8026"'
    # the example's placeholder, copied as is, is no secret
    with pytest.raises(ValueError, match=r"tokens\[0\]: is a placeholder from an example"):
        RelaySettings.load({"tokens": ["change-me-a-long-random-relay-token"]}, environ={})


def test_numbers_from_producers_need_allow_numbers(sslsms_gateway) -> None:
    notifier = Notifier(
        GatewayClient(sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url),
        groups={"oncall": [PHONE]},
        close_at_exit=None,
    )
    settings = RelaySettings(listen="127.0.0.1:0", tokens=(TOKEN,), allow_numbers=True).checked()
    relay = RelayServer(notifier, settings).start()
    try:
        with http(relay) as client:
            answer = client.post("/v1/alerts?wait=10", json={"text": "to a number", "groups": [DBA]})
            assert answer.status_code == 200 and answer.json()["sms"]["delivered"] == 1
    finally:
        relay.stop(5)


def test_webhook_naming_unknown_groups_is_routed_and_counted(relay, sslsms_gateway) -> None:
    """Alertmanager never retries a 4xx: a mistyped sms_groups label must not lose the page."""
    body = json.loads((DATA / "alertmanager_firing.json").read_bytes())
    for alert in body["alerts"]:
        alert["labels"]["sms_groups"] = "oncal"  # a typo
    with http(relay) as client:
        assert client.post("/v1/alertmanager", json=body).status_code == 202
        assert wait_for(lambda: texts(sslsms_gateway, PHONE))  # the routes (default group) decided
        metrics = client.get("/metrics").text
    assert 'sslsms_relay_unknown_groups_total{door="alertmanager"} 1.0' in metrics
