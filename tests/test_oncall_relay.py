"""Heartbeats, acknowledgements and escalation through real relays: HTTP, two relays on one
real Redis, and a real Prometheus Alertmanager whose Watchdog keeps the relay quiet until
it stops. Counts are exact, at the emulator."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.alerting.escalation import FAILED_TRIES
from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.relay.server import RelayServer
from sslsms_notify.relay.settings import RelaySettings

from .conftest import FAST_RETRY, free_port

TOKEN = "relay-token-for-tests-0001"
DATA = Path(__file__).parent / "data"
ONCALL, DBA, MANAGER = "01711111111", "01811111111", "01911111111"
AM_BINARY = shutil.which("prometheus-alertmanager")


def escalating(after: str) -> list[dict[str, Any]]:
    return [
        {
            "groups": ["oncall"],
            "min_severity": "critical",
            "escalate_after": after,
            "escalate_to": ["managers"],
        },
        {"groups": ["oncall"]},
    ]


ESCALATING = escalating("2s")


def relay_on(gateway: EmulatorServer, store: str = "memory", **options: Any) -> RelayServer:
    relay_options = {k: options.pop(k) for k in ("watchdog_timeout", "watchdog_alertname") if k in options}
    options.setdefault("per_recipient_limit", None)
    options.setdefault("dispatch", DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.2))
    notifier = Notifier(
        GatewayClient(gateway.api_token, gateway.sid, base_url=gateway.url, retry=FAST_RETRY),
        groups={"oncall": [ONCALL], "dba": [DBA], "managers": [MANAGER]},
        store=store,
        close_at_exit=None,
        **options,
    )
    settings = RelaySettings(listen="127.0.0.1:0", tokens=(TOKEN,), **relay_options).checked()
    return RelayServer(notifier, settings).start()


def http(relay: RelayServer) -> httpx.Client:
    return httpx.Client(base_url=relay.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def texts(gateway: EmulatorServer, number: str) -> list[str]:
    return [m.text for m in gateway.emulator.messages(number)]


def wait_for(predicate, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def quiet_for(seconds: float) -> None:
    """Let the timers of every process run a while longer: nothing more may page meanwhile."""
    time.sleep(seconds)


# -- heartbeats over HTTP -------------------------------------------------------------------------
def test_heartbeat_pings_are_checked_and_the_field_named(sslsms_gateway) -> None:
    relay = relay_on(sslsms_gateway)
    try:
        with http(relay) as client:
            created = client.post("/v1/heartbeats/backup", json={"every": "24h", "grace": "1h"})
            assert created.status_code == 200
            body = created.json()
            assert (body["status"], body["every"], body["grace"], body["groups"]) == (
                "created",
                86400,
                3600,
                ["oncall"],
            )
            assert client.post("/v1/heartbeats/backup").json()["status"] == "alive"  # no body at all
            for path, sent, field in [
                ("/v1/heartbeats/new-one", {}, "every"),
                ("/v1/heartbeats/x", {"every": "soon"}, "every"),
                ("/v1/heartbeats/x", {"every": 60, "grace": True}, "grace"),
                ("/v1/heartbeats/x", {"every": 60, "groups": ["nobody"]}, "groups"),
                ("/v1/heartbeats/x", {"every": 60, "evry": 1}, "evry"),
                ("/v1/heartbeats/bad%20name", {"every": 60}, "name"),
            ]:
                answer = client.post(path, json=sent)
                assert answer.status_code == 422, (path, sent, answer.text)
                assert answer.json()["field"] == field, answer.json()
            listed = client.get("/v1/heartbeats").json()["heartbeats"]
            assert [b["name"] for b in listed] == ["backup"]
            assert client.get("/v1/heartbeats/backup").status_code == 405
            assert httpx.post(f"{relay.url}/v1/heartbeats/backup").status_code == 401
    finally:
        relay.stop(5)


@pytest.mark.slow
def test_two_relays_on_one_redis_page_a_missed_heartbeat_once_and_its_return_once(
    sslsms_gateway, redis_url
) -> None:
    one, two = relay_on(sslsms_gateway, redis_url), relay_on(sslsms_gateway, redis_url)
    try:
        with http(one) as client:
            assert client.post("/v1/heartbeats/backup", json={"every": 1, "grace": 0}).status_code == 200
        assert wait_for(lambda: len(texts(sslsms_gateway, ONCALL)) >= 1)
        quiet_for(3)  # both relays' timers keep sweeping: nothing more
        missed = texts(sslsms_gateway, ONCALL)
        assert len(missed) == 1 and missed[0].startswith("[MISSED] backup: no heartbeat since ")
        with http(two) as client:
            assert client.post("/v1/heartbeats/backup", json={"every": 60}).json()["status"] == "recovered"
        assert wait_for(lambda: len(texts(sslsms_gateway, ONCALL)) >= 2)
        quiet_for(2)
        sent = texts(sslsms_gateway, ONCALL)
        assert len(sent) == 2 and sent[1].startswith("[RECOVERED] backup: heartbeat at ")
        stats = [r.notifier.stats() for r in (one, two)]
        assert sum(s["heartbeats_missed"] for s in stats) == 1
        assert sum(s["heartbeats_recovered"] for s in stats) == 1
    finally:
        one.stop(5)
        two.stop(5)


@pytest.mark.slow
def test_two_relays_on_one_redis_escalate_once(sslsms_gateway, redis_url) -> None:
    one = relay_on(sslsms_gateway, redis_url, routes=ESCALATING)
    two = relay_on(sslsms_gateway, redis_url, routes=ESCALATING)
    try:
        with http(one) as client:
            client.post("/v1/alerts", json={"text": "db1 down", "severity": "critical", "key": "db1"})
        assert wait_for(lambda: len(texts(sslsms_gateway, MANAGER)) >= 1)
        quiet_for(3)
        assert texts(sslsms_gateway, MANAGER) == ["[ESCALATED 2s] [CRIT] db1 down"]
        assert len(texts(sslsms_gateway, ONCALL)) == 1
    finally:
        one.stop(5)
        two.stop(5)


# -- acknowledgements over HTTP ---------------------------------------------------------------------
def code_of(text: str) -> str:
    return text.rsplit(" ack:", 1)[1]


def test_ack_over_http_stops_the_escalation_and_wrong_codes_are_refused_and_counted(sslsms_gateway) -> None:
    after = 8.0  # room for the tries below on a busy machine
    relay = relay_on(sslsms_gateway, routes=escalating(f"{after:g}s"))
    try:
        with http(relay) as client:
            raised = time.monotonic()
            client.post("/v1/alerts", json={"text": "db1 down", "severity": "critical"})
            assert wait_for(lambda: len(texts(sslsms_gateway, ONCALL)) == 1)
            code = code_of(texts(sslsms_gateway, ONCALL)[0])
            wrong = "Z" * 6 if code != "Z" * 6 else "Y" * 6
            refused = [client.post(f"/v1/ack/{wrong}") for _ in range(FAILED_TRIES)]
            assert [a.status_code for a in refused] == [404] * FAILED_TRIES
            assert refused[0].json()["field"] == "code"
            limited = client.post(f"/v1/ack/{code}")  # even the right one waits now, for this client
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
            malformed = client.post("/v1/ack/nope")
            assert (malformed.status_code, malformed.json()["field"]) == (422, "code")
            assert client.get("/v1/ack/" + code).status_code == 405
            relay.notifier.store.transact(lambda tx: tx.rates.delete("ackfail:relay 127.0.0.1"))
            acked = client.post(f"/v1/ack/{code.lower()}")
            assert time.monotonic() - raised < after, "acknowledged too late to tell anything"
            assert acked.status_code == 200 and acked.json()["status"] == "acked"
            assert acked.json()["alert"] == "[CRIT] db1 down"
            metrics = client.get("/metrics").text
        quiet_for(max(0.0, raised + after + 2 - time.monotonic()))  # past escalate_after
        assert texts(sslsms_gateway, MANAGER) == []
        assert f"sslsms_acks_refused_total {FAILED_TRIES + 2}.0" in metrics
        assert "sslsms_acks_total 1.0" in metrics
        assert 'route="/v1/ack/{code}"' in metrics
    finally:
        relay.stop(5)


def test_an_alertmanager_resolve_cancels_the_escalation(sslsms_gateway) -> None:
    firing = json.loads((DATA / "alertmanager_firing.json").read_text())
    resolved = json.loads((DATA / "alertmanager_resolved.json").read_text())
    other = json.loads(
        json.dumps(firing).replace("e477123b6a001313", "0000000000000042").replace("db1", "db2")
    )
    relay = relay_on(sslsms_gateway, routes=escalating("4s"))
    try:
        with http(relay) as client:
            assert client.post("/v1/alertmanager", json=firing).status_code == 202
            assert client.post("/v1/alertmanager", json=other).status_code == 202  # never resolved
            assert client.post("/v1/alertmanager", json=resolved).status_code == 202
        assert wait_for(lambda: len(texts(sslsms_gateway, MANAGER)) >= 1)
        quiet_for(3)
        escalated = texts(sslsms_gateway, MANAGER)
        assert len(escalated) == 1 and escalated[0].startswith("[ESCALATED 4s] [CRIT] alertmanager/")
        assert "db2" in escalated[0]
    finally:
        relay.stop(5)


# -- the watchdog ------------------------------------------------------------------------------
def watchdog_body(status: str = "firing") -> dict[str, Any]:
    return {
        "receiver": "sms",
        "status": status,
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "Watchdog", "severity": "none"},
                "annotations": {"summary": "the alerting pipeline works"},
                "startsAt": "2026-11-25T19:55:48Z",
                "fingerprint": "1f2e3d4c5b6a7988",
            }
        ],
        "version": "4",
    }


def test_the_watchdog_never_pages_by_itself_and_its_silence_pages_once(sslsms_gateway) -> None:
    relay = relay_on(sslsms_gateway, watchdog_timeout=5)
    try:
        with http(relay) as client:
            for _ in range(4):
                answer = client.post("/v1/alertmanager", json=watchdog_body())
                assert answer.status_code == 202 and answer.json()["watchdog"] == 1
                assert answer.json()["alerts"] == []
                time.sleep(0.5)
            beats = client.get("/v1/heartbeats").json()["heartbeats"]
            assert [(b["name"], b["kind"], b["every"], b["grace"]) for b in beats] == [
                ("alertmanager", "alertmanager", 5, 0)
            ]
            assert texts(sslsms_gateway, ONCALL) == []
            # a resolved watchdog (its source stopped it) pings nothing: the silence pages
            client.post("/v1/alertmanager", json=watchdog_body("resolved"))
        assert wait_for(lambda: len(texts(sslsms_gateway, ONCALL)) >= 1)
        quiet_for(2)
        (missed,) = texts(sslsms_gateway, ONCALL)
        assert missed.startswith("[MISSED] monitoring: Alertmanager silent since ")
    finally:
        relay.stop(5)


@pytest.mark.slow
@pytest.mark.skipif(AM_BINARY is None, reason="scripts/test-deps.sh installs prometheus-alertmanager")
def test_a_real_alertmanagers_watchdog_keeps_the_relay_quiet_and_its_stop_pages_missed_once(
    sslsms_gateway, tmp_path: Path
) -> None:
    timeout = 4.0  # Alertmanager re-sends the watchdog every second or two
    relay = relay_on(sslsms_gateway, f"sqlite:///{tmp_path}/relay.db", watchdog_timeout=timeout)
    am_port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        textwrap.dedent(
            f"""
            route:
              receiver: sms-relay
              group_by: ['alertname']
              group_wait: 0s
              group_interval: 1s
              repeat_interval: 1s
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
    assert AM_BINARY is not None
    am = subprocess.Popen(
        [
            AM_BINARY,
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
        assert wait_for(lambda: _ready(api), timeout=30)
        now = datetime.now(UTC)
        watchdog = {
            "labels": {"alertname": "Watchdog", "severity": "none"},
            "annotations": {"summary": "the alerting pipeline works"},
            "startsAt": (now - timedelta(seconds=5)).isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),  # firing for the whole test
        }
        assert api.post("/api/v2/alerts", json=[watchdog]).status_code == 200

        def pings() -> int:
            return sum(b.last_ping > 0 for b in relay.notifier.heartbeats() if b.name == "alertmanager")

        assert wait_for(pings, timeout=20)
        first_ping = relay.notifier.heartbeats()[0].last_ping
        quiet_for(2 * timeout)  # Alertmanager re-sends it every second or two: nothing pages
        assert relay.notifier.heartbeats()[0].last_ping > first_ping  # it kept pinging
        assert texts(sslsms_gateway, ONCALL) == []
        am.terminate()
        am.wait(10)
        stopped = time.monotonic()
        assert wait_for(lambda: len(texts(sslsms_gateway, ONCALL)) >= 1, timeout=timeout + 5)
        assert time.monotonic() - stopped <= timeout + 5
        quiet_for(2)
        (missed,) = texts(sslsms_gateway, ONCALL)
        assert missed.startswith("[MISSED] monitoring: Alertmanager silent since ")
        assert Counter(m.text for m in sslsms_gateway.emulator.messages()) == Counter({missed: 1})
    finally:
        if am.poll() is None:
            am.terminate()
            am.wait(10)
        api.close()
        relay.stop(5)


def _ready(api: httpx.Client) -> bool:
    try:
        return api.get("/-/ready").status_code == 200
    except httpx.HTTPError:
        return False


def test_a_grafana_rule_named_like_the_watchdog_is_the_heartbeat_grafana(sslsms_gateway) -> None:
    body = json.loads((DATA / "grafana_default_firing.json").read_text())
    body["alerts"][0]["labels"]["alertname"] = "Watchdog"  # an always-firing rule, so named
    relay = relay_on(sslsms_gateway, watchdog_timeout=600)
    try:
        with http(relay) as client:
            answer = client.post("/v1/grafana", json=body)
            assert answer.status_code == 202 and answer.json()["watchdog"] == 1
            assert len(answer.json()["alerts"]) == len(body["alerts"]) - 1  # the others are alerts
            beats = client.get("/v1/heartbeats").json()["heartbeats"]
        assert [(b["name"], b["kind"], b["every"]) for b in beats] == [("grafana", "grafana", 600)]
        assert relay.notifier.flush(10)
        assert not any("Watchdog" in t for t in texts(sslsms_gateway, ONCALL))
    finally:
        relay.stop(5)
