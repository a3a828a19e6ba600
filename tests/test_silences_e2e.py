"""Silences as operators use them: real processes, a real SQLite file, a real Redis, a real
Alertmanager, and the relay's HTTP API.

Each end-to-end case adds a silence through one door, raises alerts through others, and
lets the silence run out with no producer left: the relay's timers send the end SMS, one
per group, within 2 s of the end. Counts are exact, at the emulator.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sslsms_notify.emulator import EmulatorServer

from .conftest import free_port, installed
from .test_lifecycle import _ready
from .test_relay import DBA, PHONE, TOKEN, http, make_relay, texts, wait_for
from .test_serve import CLI, serve, write_config
from .test_serve import TOKEN as SERVE_TOKEN

pytestmark = pytest.mark.slow
HOST = socket.gethostname().split(".")[0]

PRODUCER = textwrap.dedent(
    """
    import logging
    from sslsms_notify import SMSHandler

    handler = SMSHandler(level_groups={"ERROR": ["oncall", "dba"]}, close_timeout=20)
    root = logging.getLogger("app")
    root.addHandler(handler)
    root.propagate = False
    for i in range(30):
        logging.getLogger("app.db.replica").error("replica lag %d s", i)
    for _ in range(10):
        logging.getLogger("app.db.primary").critical("primary unreachable")
    logging.getLogger("app.web").error("web1 slow")
    handler.close()
    """
)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def ends_at(silence: dict[str, Any]) -> float:
    return datetime.fromisoformat(silence["ends_at"].replace("Z", "+00:00")).timestamp()


def arrivals(gateway: EmulatorServer, number: str) -> list[tuple[str, float]]:
    return [(m.text, m.received_at) for m in gateway.emulator.messages(number)]


def await_end_sms(gateway: EmulatorServer, numbers: dict[str, int], end: float) -> None:
    """Wait until each phone has its count of SMS, and a second more (nothing more may come)."""
    deadline = time.monotonic() + max(0.0, end - time.time()) + 15
    while time.monotonic() < deadline and any(
        len(gateway.emulator.messages(n)) < count for n, count in numbers.items()
    ):
        time.sleep(0.05)
    time.sleep(1.0)


def test_a_cli_silence_holds_a_logging_process_and_the_relay_tells_each_group_once(
    sslsms_gateway, tmp_path: Path
) -> None:
    """One SQLite file: `silence add` from the CLI, an application logging through SMSHandler
    in its own process, and a relay (`serve`) whose timers send the end SMS."""
    config = write_config(tmp_path / "relay.toml", sslsms_gateway, f"sqlite:///{tmp_path}/shared.db")
    env = {**os.environ, "SSLSMS_CONFIG": str(config), "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("SSLSMS_URL", None)
    with serve(config, tmp_path):
        added = cli(
            "silence", "add", 'source=~"app\\.db.*"', "--for", "12s", "--comment", "db migration",
            "--config", str(config), "--json", env=env,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        silence = json.loads(added.stdout)
        producer = subprocess.run([sys.executable, "-c", PRODUCER], env=env, capture_output=True, timeout=90)
        assert producer.returncode == 0, producer.stderr
        # the producer is gone; while the silence lasts only the web alert paged, once per phone
        assert time.time() < ends_at(silence), "the producer took longer than the silence"
        web = f"[ERROR] {HOST}/app.web: web1 slow"
        assert texts(sslsms_gateway, PHONE) == texts(sslsms_gateway, DBA) == [web]
        listed = json.loads(cli("silence", "list", "--config", str(config), "--json", env=env).stdout)
        assert [(s["id"], s["held"], s["groups"]) for s in listed] == [
            (silence["id"], 40, {"oncall": 40, "dba": 40})
        ]
        end = ends_at(silence)
        await_end_sms(sslsms_gateway, {PHONE: 2, DBA: 2}, end)
        summary = (
            "[SILENCE ENDED] db migration: 40 alerts held (2 kinds): "
            f"[ERROR] {HOST}/app.db.replica: replica lag 0 s | "
            f"[CRIT] {HOST}/app.db.primary: primary unreachable"
        )
        for number in (PHONE, DBA):
            got = arrivals(sslsms_gateway, number)
            assert [text for text, _ in got] == [web, summary]
            assert end <= got[1][1] <= end + 2, f"the end SMS came {got[1][1] - end:.2f} s after the end"
        assert cli("silence", "list", "--config", str(config), "--json", env=env).stdout.strip() == "[]"


def test_two_relays_on_one_redis_send_each_group_one_end_sms(
    sslsms_gateway, redis_url, tmp_path: Path
) -> None:
    """Two `serve` processes on one Redis: alerts to both, `send` from a shell too; one end SMS
    per group."""
    config = write_config(tmp_path / "relay.toml", sslsms_gateway, redis_url)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("SSLSMS_URL", None)
    with serve(config, tmp_path) as (one, _), serve(config, tmp_path) as (two, _):
        added = cli(
            "silence", "add", 'source=~"batch\\..*"', "--for", "10s", "--comment", "reindex",
            "--config", str(config), "--json", env=env,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        silence = json.loads(added.stdout)
        headers = {"Authorization": f"Bearer {SERVE_TOKEN}"}
        for i in range(20):
            text = f"job {'ab'[i % 2]} failed"
            body = {"text": text, "source": "batch.nightly", "groups": ["oncall", "dba"]}
            answer = httpx.post(f"{(one, two)[i % 2]}/v1/alerts", json=body, headers=headers, timeout=30)
            assert answer.json()["alerts"] == [{"status": "silenced"}]
        shell = cli(
            "send", "--config", str(config), "--to", "oncall", "--source", "batch.cli", "cli job failed",
            env=env,
        )  # fmt: skip
        assert shell.returncode == 3 and shell.stderr.startswith("silenced: "), shell
        listed = httpx.get(f"{two}/v1/silences", headers=headers, timeout=30).json()["silences"]
        assert [(s["id"], s["held"], s["groups"]) for s in listed] == [
            (silence["id"], 21, {"oncall": 21, "dba": 20})
        ]
        assert sslsms_gateway.emulator.messages() == []
        end = ends_at(silence)
        await_end_sms(sslsms_gateway, {PHONE: 1, DBA: 1}, end)
        got = {number: arrivals(sslsms_gateway, number) for number in (PHONE, DBA)}
        assert [t for t, _ in got[PHONE]] == [
            "[SILENCE ENDED] reindex: 21 alerts held (3 kinds): [ERROR] batch.nightly: job a failed | "
            f"[ERROR] batch.nightly: job b failed | [ERROR] {HOST}/batch.cli: cli job failed"
        ]
        assert [t for t, _ in got[DBA]] == [
            "[SILENCE ENDED] reindex: 20 alerts held (2 kinds): [ERROR] batch.nightly: job a failed | "
            "[ERROR] batch.nightly: job b failed"
        ]
        for ((_text, at),) in (got[PHONE], got[DBA]):
            assert end <= at <= end + 2, f"the end SMS came {at - end:.2f} s after the end"


def test_a_relay_silence_holds_a_real_alertmanagers_firing_and_resolved(
    sslsms_gateway, tmp_path: Path
) -> None:
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
    try:
        assert wait_for(lambda: _ready(api), timeout=30)
        with http(relay) as client:
            body = {"matchers": ['alertname="DiskFull"'], "for": "15s", "comment": "disk swap"}
            answer = client.post("/v1/silences", json=body)
            assert answer.status_code == 201, answer.text
            silence = answer.json()

            def held() -> int:
                return int(client.get("/v1/silences").json()["silences"][0]["held"])

            started = datetime.now(UTC) - timedelta(seconds=5)
            alert: dict[str, Any] = {
                "labels": {
                    "alertname": "DiskFull",
                    "instance": "db1",
                    "severity": "critical",
                    "sms_groups": "oncall,dba",
                },
                "annotations": {"summary": "/var on db1 is 97% full"},
                "startsAt": started.isoformat(),
            }
            assert api.post("/api/v2/alerts", json=[alert]).status_code == 200
            assert wait_for(lambda: held() == 1, timeout=20)
            resolved = {**alert, "endsAt": (datetime.now(UTC) - timedelta(seconds=1)).isoformat()}
            assert api.post("/api/v2/alerts", json=[resolved]).status_code == 200
            assert wait_for(lambda: held() == 2, timeout=20)
            assert relay.notifier.stats()["silenced"] >= 2
            assert sslsms_gateway.emulator.messages() == []  # neither the firing nor the resolve paged
        end = ends_at(silence)
        assert time.time() < end, "Alertmanager took longer than the silence"
        await_end_sms(sslsms_gateway, {PHONE: 1, DBA: 1}, end)
        time.sleep(1.5)  # Alertmanager notifies on its 1 s group_interval: nothing more may page
        summary = (
            "[SILENCE ENDED] disk swap: 2 alerts held (1 kind): "
            "[RESOLVED] alertmanager/sms-relay: DiskFull (db1): /var on db1 is 97% full"
        )
        for number in (PHONE, DBA):
            [(text, at)] = arrivals(sslsms_gateway, number)
            assert text == summary
            assert end <= at <= end + 2, f"the end SMS came {at - end:.2f} s after the end"
    finally:
        am.terminate()
        am.wait(10)
        api.close()
        relay.stop(5)


# -- the relay's API -------------------------------------------------------------------------------
def test_the_relay_api_refuses_bad_silences_naming_the_field(sslsms_gateway) -> None:
    relay = make_relay(sslsms_gateway)
    try:
        with http(relay) as client:
            cases = [
                ({"matchers": ["alertname~x"], "for": "1h"}, 422, "matchers[0]"),
                ({"matchers": ["a=b", "c=~(x"], "for": "1h"}, 422, "matchers[1]"),
                ({"matchers": ["a=b"], "for": "31d"}, 422, "for"),
                ({"matchers": ["a=b"], "for": "soon"}, 422, "for"),
                ({"matchers": ["a=b"]}, 422, "for"),
                ({"matchers": "a=b", "for": "1h"}, 422, "matchers"),
                ({"matchers": ["a=b"], "for": "1h", "comment": 5}, 422, "comment"),
                ({"matchers": ["a=b"], "for": "1h", "until": "x"}, 422, "until"),
                ([{"matchers": ["a=b"]}], 400, "body"),
            ]
            for body, status, field in cases:
                answer = client.post("/v1/silences", json=body)
                assert (answer.status_code, answer.json()["field"]) == (status, field), (body, answer.text)
                assert answer.json()["error"].startswith(field), answer.text
            assert client.post("/v1/silences", json={"matchers": ["a=b"], "for": 90}).status_code == 201
            gone = client.delete("/v1/silences/nosuchid")
            assert (gone.status_code, gone.json()["field"]) == (422, "id")
            assert gone.json()["error"] == (
                "id='nosuchid': no active silence has this id (silence list shows them)"
            )
            assert client.get("/v1/silences/x").status_code == 405
        with httpx.Client(base_url=relay.url) as anonymous:
            routes = [("GET", "/v1/silences"), ("POST", "/v1/silences"), ("DELETE", "/v1/silences/x")]
            for method, path in routes:
                assert anonymous.request(method, path, json={}).status_code == 401
    finally:
        relay.stop(5)


def test_a_relay_silence_expired_over_http_tells_at_once(sslsms_gateway) -> None:
    relay = make_relay(sslsms_gateway)
    try:
        with http(relay) as client:
            silence = client.post("/v1/silences", json={"matchers": ["source=cron"], "for": "1h"}).json()
            answer = client.post("/v1/alerts", json={"text": "backup failed", "source": "cron"})
            assert answer.json()["alerts"] == [{"status": "silenced"}]
            expired = client.delete(f"/v1/silences/{silence['id']}")
            assert expired.status_code == 200 and expired.json()["held"] == 1 and expired.json()["expired"]
            took = time.monotonic()
            assert wait_for(lambda: len(texts(sslsms_gateway, PHONE)) == 1, timeout=10)
            assert time.monotonic() - took < 2
            assert texts(sslsms_gateway, PHONE) == [
                '[SILENCE ENDED] source="cron": 1 alert held (1 kind): [ERROR] cron: backup failed'
            ]
            assert client.get("/v1/silences").json() == {"silences": []}
            metrics = client.get("/metrics").text
            assert "sslsms_alerts_silenced_total 1.0" in metrics
            assert "sslsms_hold_summaries_total 1.0" in metrics
    finally:
        relay.stop(5)
