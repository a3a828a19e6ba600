"""A webhook alert pages once per lifecycle: firing once, resolved once, re-sends are nothing new.

Alertmanager sends every alert of a group again whenever the group changes (an alert
joins or resolves) and at the route's ``repeat_interval``; an HA pair of Alertmanagers
may send one notification twice. Grafana's webhook has the same shape. An alert's
lifecycle is its fingerprint and ``startsAt``: a new firing gets a new ``startsAt``.
"""

from __future__ import annotations

import copy
import json
import subprocess
import textwrap
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sslsms_notify.relay.server import RelayServer

from .conftest import free_port, installed
from .test_relay import DATA, DBA, PHONE, TOKEN, http, make_relay, texts, wait_for

FIRING = json.loads((DATA / "alertmanager_firing.json").read_text())
RESOLVED = json.loads((DATA / "alertmanager_resolved.json").read_text())


def post(relay: RelayServer, body: dict[str, Any], door: str = "alertmanager") -> dict[str, Any]:
    with http(relay) as client:
        answer = client.post(f"/v1/{door}", json=body)
    assert answer.status_code == 202, answer.text
    return answer.json()


def sent_when_settled(relay: RelayServer, gateway: Any) -> list[str]:
    assert relay.notifier.flush(15)
    return texts(gateway, PHONE)


def test_a_resend_is_nothing_new_inside_and_after_the_dedup_window(sslsms_gateway, tmp_path) -> None:
    relay = make_relay(sslsms_gateway, store=f"sqlite:///{tmp_path}/lc.db", dedup_window=0.3)
    try:
        first = post(relay, FIRING)
        assert [a["status"] for a in first["alerts"]] == ["queued"]
        again = post(relay, FIRING)  # the group changed, or an HA twin sent it
        assert [a["status"] for a in again["alerts"]] == ["suppressed"]
        time.sleep(0.4)  # the dedup window has ended: still the same firing
        assert [a["status"] for a in post(relay, FIRING)["alerts"]] == ["suppressed"]
        assert relay.notifier.flush(15)
        relay.notifier.tick(force_sweep=True)  # any summary would be queued now
        assert relay.notifier.flush(15)
        assert texts(sslsms_gateway, PHONE) == [
            "[CRIT] alertmanager/sms.relay: DiskFull (db1:9100): Disk /var is 97% full"
        ]
        stats = relay.notifier.stats()
        assert (stats["resent"], stats["summaries"]) == (2, 0)
    finally:
        relay.stop(5)


def test_resolved_once_then_stale_firing_and_resolve_resends_page_nothing(sslsms_gateway) -> None:
    relay = make_relay(sslsms_gateway)
    try:
        post(relay, FIRING)
        post(relay, RESOLVED)
        post(relay, RESOLVED)  # re-sent resolve
        post(relay, FIRING)  # a late firing notification of the same startsAt (an HA twin)
        assert sent_when_settled(relay, sslsms_gateway) == [
            "[CRIT] alertmanager/sms.relay: DiskFull (db1:9100): Disk /var is 97% full",
            "[RESOLVED] alertmanager/sms.relay: DiskFull (db1:9100): Disk /var is 97% full",
        ]
    finally:
        relay.stop(5)


def test_firing_again_is_a_new_lifecycle(sslsms_gateway) -> None:
    relay = make_relay(sslsms_gateway, dedup_window=300)
    try:
        post(relay, FIRING)
        post(relay, RESOLVED)
        again = copy.deepcopy(FIRING)
        again["alerts"][0]["startsAt"] = "2026-11-25T20:10:00Z"
        post(relay, again)
        post(relay, again)
        sent = sent_when_settled(relay, sslsms_gateway)
        assert [t.split("]")[0] for t in sent] == ["[CRIT", "[RESOLVED", "[CRIT"]
    finally:
        relay.stop(5)


def test_remind_every_pages_a_reminder_on_a_resend_after_that_long(sslsms_gateway) -> None:
    relay = make_relay(sslsms_gateway, remind_every=1.0)
    try:
        post(relay, FIRING)
        post(relay, FIRING)  # too soon: nothing
        time.sleep(1.05)
        post(relay, FIRING)  # Alertmanager's repeat_interval: a reminder
        sent = sent_when_settled(relay, sslsms_gateway)
        assert len(sent) == 2
        assert sent[1].startswith("[CRIT still firing since ")
        assert sent[1].endswith("alertmanager/sms.relay: DiskFull (db1:9100): Disk /var is 97% full")
        assert relay.notifier.stats()["reminders"] == 1
    finally:
        relay.stop(5)


def test_two_relays_on_one_redis_page_a_twice_sent_alert_once(sslsms_gateway, redis_url) -> None:
    """An Alertmanager HA pair sends one notification to both relays at once."""
    one, two = make_relay(sslsms_gateway, store=redis_url), make_relay(sslsms_gateway, store=redis_url)
    try:
        for relay in (one, two, one, two):
            post(relay, FIRING)
        for relay in (two, one):
            post(relay, RESOLVED)
        assert one.notifier.flush(15) and two.notifier.flush(15)
        got = Counter(texts(sslsms_gateway, PHONE))
        assert sorted(got.values()) == [1, 1] and len(got) == 2
    finally:
        one.stop(5)
        two.stop(5)


def test_grafana_resends_are_nothing_new_too(sslsms_gateway) -> None:
    body = json.loads((DATA / "grafana_default_firing.json").read_text())
    relay = make_relay(sslsms_gateway)
    try:
        post(relay, body, "grafana")
        post(relay, body, "grafana")
        assert len(sent_when_settled(relay, sslsms_gateway)) == 2  # two alerts, each once
    finally:
        relay.stop(5)


# -- a real Alertmanager --------------------------------------------------------------------------
@pytest.mark.slow
def test_real_alertmanager_second_alert_joins_after_the_window_then_both_resolve(
    sslsms_gateway, tmp_path: Path
) -> None:
    """Four SMS per phone: two firing, two resolved, whatever Alertmanager re-sends.

    group_interval is short, so Alertmanager re-sends the whole group (the first alert
    again) when the second joins and when each resolves; the dedup window (1 s) has
    long ended by then.
    """
    relay = make_relay(sslsms_gateway, store=f"sqlite:///{tmp_path}/am.db", dedup_window=1)
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
    received: list[int] = []
    try:
        assert wait_for(lambda: _ready(api), timeout=30)
        started = datetime.now(UTC) - timedelta(seconds=5)

        def alert(instance: str, ends: datetime | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {
                "labels": {"alertname": "DiskFull", "instance": instance, "severity": "critical"},
                "annotations": {"summary": f"/var on {instance} is 97% full"},
                "startsAt": started.isoformat(),
            }
            if ends is not None:
                body["endsAt"] = ends.isoformat()
            return body

        assert api.post("/api/v2/alerts", json=[alert("db1")]).status_code == 200
        assert wait_for(lambda: len(texts(sslsms_gateway, PHONE)) == 1, timeout=20)
        time.sleep(1.5)  # the dedup window ends; the group keeps its first alert
        requests_before = _webhook_posts(relay)
        assert api.post("/api/v2/alerts", json=[alert("db1"), alert("db2")]).status_code == 200
        assert wait_for(lambda: len(texts(sslsms_gateway, PHONE)) == 2, timeout=20)
        # Alertmanager sent the group again with db1 in it: that must have paged nobody
        assert wait_for(lambda: _webhook_posts(relay) > requests_before, timeout=10)
        ended = datetime.now(UTC) - timedelta(seconds=1)
        assert api.post("/api/v2/alerts", json=[alert("db1", ended), alert("db2", ended)]).status_code == 200
        assert wait_for(lambda: len(texts(sslsms_gateway, PHONE)) >= 4, timeout=20)
        # An absence has no event to await: watch Alertmanager's next group_interval flushes
        # (1 s) for anything it sends again, then let the relay finish what it took.
        time.sleep(2.5)
        assert relay.notifier.flush(15)
        received = [len(texts(sslsms_gateway, number)) for number in (PHONE,)]
        sent = sorted(texts(sslsms_gateway, PHONE))
        assert sent == sorted(
            f"[{tag}] alertmanager/sms-relay: DiskFull ({i}): /var on {i} is 97% full"
            for tag in ("CRIT", "RESOLVED")
            for i in ("db1", "db2")
        )
        assert texts(sslsms_gateway, DBA) == []
        assert relay.notifier.stats()["resent"] >= 1
    finally:
        am.terminate()
        am.wait(10)
        api.close()
        relay.stop(5)
    assert received == [4]


def _ready(api: httpx.Client) -> bool:
    try:
        return api.get("/-/ready").status_code == 200
    except httpx.HTTPError:
        return False


def _webhook_posts(relay: RelayServer) -> int:
    return int(relay.notifier.stats()["received"])
