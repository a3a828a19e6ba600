"""The relay's payload layer: our API, Alertmanager and Grafana webhook bodies to AlertSpecs.

Samples are real: ``tests/data/alertmanager_*.json`` and ``AM_MIXED`` were received from
Alertmanager 0.25.0 (Debian's prometheus-alertmanager) by a local webhook listener; the
Grafana bodies are copied from Grafana's documentation (paths cited beside each).
"""

from __future__ import annotations

import copy
import json
import math
import re
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sslsms_notify._log import register_secret
from sslsms_notify.relay.payloads import (
    DEFAULT_SEVERITY_MAP,
    AlertSpec,
    PayloadError,
    WebhookOptions,
    decode_body,
    format_number,
    labels_fingerprint,
    parse_alertmanager,
    parse_alerts,
    parse_grafana,
)

DATA = Path(__file__).parent / "data"


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


AM_FIRING = load("alertmanager_firing.json")
AM_RESOLVED = load("alertmanager_resolved.json")

# Received from Alertmanager 0.25.0 (group_by alertname): web1 had just resolved, web2
# still fired, and both came in one notification whose top-level status is "firing".
AM_MIXED: dict[str, Any] = {
    "receiver": "sms\\.relay",
    "status": "firing",
    "alerts": [
        {
            "status": "resolved",
            "labels": {"alertname": "HighLoad", "instance": "web1"},
            "annotations": {},
            "startsAt": "2026-11-25T19:56:09.363496276Z",
            "endsAt": "2026-11-25T19:56:10Z",
            "generatorURL": "",
            "fingerprint": "e2a20d51f19af4c6",
        },
        {
            "status": "firing",
            "labels": {"alertname": "HighLoad", "instance": "web2", "severity": "warning"},
            "annotations": {"message": "load 12"},
            "startsAt": "2026-11-25T19:56:09.363496276Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "8982985a10d44fbe",
        },
    ],
    "groupLabels": {"alertname": "HighLoad"},
    "commonLabels": {"alertname": "HighLoad"},
    "commonAnnotations": {},
    "externalURL": "http://vm:19093",
    "version": "4",
    "groupKey": '{}:{alertname="HighLoad"}',
    "truncatedAlerts": 0,
}

# grafana/grafana docs/sources/alerting/manage-notifications/webhook-notifier.md
# ("Example JSON body", unified alerting, payload version "1").
GRAFANA_DOC: dict[str, Any] = {
    "receiver": "My Super Webhook",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
            "annotations": {
                "description": "The system has high memory usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone us-1",
            },
            "startsAt": "2021-10-12T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"data-avg": 14151.331895396988},
        },
        {
            "status": "firing",
            "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
            "annotations": {
                "description": "The system has high CPU usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone eu-1",
            },
            "startsAt": "2021-10-12T09:56:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
            "fingerprint": "bc97ff14869b13e3",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers=alertname%3DT1%2Cteam%3Dblue%2Czone%3Deu-1",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"data-avg": 47043.702386305304},
        },
    ],
    "groupLabels": {},
    "commonLabels": {"team": "blue"},
    "commonAnnotations": {},
    "externalURL": "https://play.grafana.org/",
    "version": "1",
    "groupKey": "{}:{}",
    "truncatedAlerts": 0,
    "title": "[FIRING:2]  (blue)",
    "state": "alerting",
    "message": "**Firing**\n\nLabels:\n - alertname = T2\n - team = blue\n - zone = us-1\n",
}

# The same page for Grafana 9.x, whose alerts carried "valueString" (first alert only).
GRAFANA_9_ALERT: dict[str, Any] = {
    "status": "firing",
    "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
    "annotations": {"runbook_url": "https://myrunbook.com/runbook/1234"},
    "startsAt": "2021-10-12T09:51:03.157076+02:00",
    "endsAt": "0001-01-01T00:00:00Z",
    "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
    "fingerprint": "c6eadffa33fcdf37",
    "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana",
    "dashboardURL": "",
    "panelURL": "",
    "valueString": "[ metric='' labels={} value=14151.331895396988 ]",
}

# grafana/grafana docs/sources/old-alerting/notifications.md ("Webhook", legacy alerting).
GRAFANA_LEGACY: dict[str, Any] = {
    "dashboardId": 1,
    "evalMatches": [{"value": 1, "metric": "Count", "tags": {}}],
    "imageUrl": "https://grafana.com/static/assets/img/blog/mixed_styles.png",
    "message": "Notification Message",
    "orgId": 1,
    "panelId": 2,
    "ruleId": 1,
    "ruleName": "Panel Title alert",
    "ruleUrl": "http://localhost:3000/d/hZ7BuVbWz/test-dashboard?fullscreen&edit&tab=alert&panelId=2&orgId=1",
    "state": "alerting",
    "tags": {"tag name": "tag value"},
    "title": "[Alerting] Panel Title alert",
}


def am_body(*alerts: Any, **top: Any) -> dict[str, Any]:
    """A minimal Alertmanager body around the given alerts."""
    return {"version": "4", "status": "firing", "receiver": "sms", "alerts": list(alerts), **top}


def am_alert(
    labels: dict[str, str], annotations: dict[str, str] | None = None, **more: Any
) -> dict[str, Any]:
    alert: dict[str, Any] = {"status": "firing", "labels": labels, "annotations": annotations or {}}
    alert["fingerprint"] = labels_fingerprint(labels)
    alert.update(more)
    return alert


def raises(exc_info: pytest.ExceptionInfo[PayloadError], field: str, status: int, rule: str) -> None:
    err = exc_info.value
    assert (err.field, err.status) == (field, status), str(err)
    assert rule in err.rule, err.rule
    assert str(err) == f"{err.field}: {err.rule}"


# --- decode_body ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        (b'{"text": "x"}', {"text": "x"}),
        ('[{"text": "x"}]', [{"text": "x"}]),
        ('\ufeff{"text": "x"}'.encode(), {"text": "x"}),  # a BOM is tolerated
        ('{"text": "ডিস্ক"}'.encode(), {"text": "ডিস্ক"}),
    ],
)
def test_decode_body(raw: bytes | str, data: object) -> None:
    assert decode_body(raw) == data


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (b"", "is not JSON (Expecting value at line 1 column 1)"),
        (b'{"text": "x",}', "is not JSON"),
        (b'{"value": NaN}', "NaN is not JSON"),
        (b'{"value": -Infinity}', "-Infinity is not JSON"),
        (b"\xff\xfe{}", "is not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_decode_body_refuses_non_json_with_400(raw: bytes, rule: str) -> None:
    with pytest.raises(PayloadError) as exc_info:
        decode_body(raw)
    raises(exc_info, "body", 400, rule)


def test_decode_error_never_quotes_the_body() -> None:
    token = "sk_live_" + "9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c"
    with pytest.raises(PayloadError) as exc_info:
        decode_body(f'{{"token": "{token}" oops}}')
    assert token not in str(exc_info.value)


# --- our API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "specs"),
    [
        pytest.param({"text": "disk full"}, [AlertSpec("disk full")], id="minimal"),
        pytest.param(
            {
                "text": "  disk full on db1  ",
                "severity": "CRIT",
                "key": "db1-disk",
                "groups": ["oncall", "01712345678"],
                "source": "cron/backup",
                "tags": ["disk", "db"],
            },
            [
                AlertSpec(
                    "disk full on db1",
                    "critical",
                    "db1-disk",
                    ("oncall", "01712345678"),
                    "cron/backup",
                    ("disk", "db"),
                )
            ],
            id="every-field",
        ),
        pytest.param([{"text": "a"}, {"text": "b"}], [AlertSpec("a"), AlertSpec("b")], id="array"),
        pytest.param({"alerts": [{"text": "a"}]}, [AlertSpec("a")], id="wrapped"),
        pytest.param(
            {"text": "a", "severity": None, "key": None, "groups": None, "source": None, "tags": None},
            [AlertSpec("a")],
            id="null-is-absent",
        ),
        pytest.param(
            {"text": "a", "groups": "oncall"}, [AlertSpec("a", groups=("oncall",))], id="groups-string"
        ),
        pytest.param(
            {"text": "a", "groups": " oncall , dba "},
            [AlertSpec("a", groups=("oncall", "dba"))],
            id="groups-commas",
        ),
        pytest.param(
            {"text": "a", "groups": ["x", "y", "x"], "tags": ["t", "t"]},
            [AlertSpec("a", groups=("x", "y"), tags=("t",))],
            id="deduplicated",
        ),
        pytest.param({"text": "a", "tags": []}, [AlertSpec("a")], id="no-tags"),
        pytest.param({"text": "x" * 1000}, [AlertSpec("x" * 1000)], id="text-at-limit"),
        pytest.param({"text": " " + "x" * 1000 + "\n"}, [AlertSpec("x" * 1000)], id="limit-after-strip"),
        pytest.param({"text": "a", "key": "k" * 200}, [AlertSpec("a", key="k" * 200)], id="key-at-limit"),
        pytest.param(
            {"text": "a", "source": "s" * 100}, [AlertSpec("a", source="s" * 100)], id="source-at-limit"
        ),
    ],
)
def test_parse_alerts(data: object, specs: list[AlertSpec]) -> None:
    assert parse_alerts(data) == specs


@pytest.mark.parametrize(
    ("given", "severity"),
    [
        ("debug", "debug"),
        ("info", "info"),
        ("warning", "warning"),
        ("warn", "warning"),
        ("error", "error"),
        ("err", "error"),
        ("critical", "critical"),
        ("crit", "critical"),
        ("fatal", "critical"),
        ("FATAL", "critical"),
        (" Warn ", "warning"),
    ],
)
def test_parse_alerts_severity_names(given: str, severity: str) -> None:
    assert parse_alerts({"text": "a", "severity": given})[0].severity == severity


@pytest.mark.parametrize(
    ("data", "field", "status", "rule"),
    [
        ("disk full", "body", 400, "must be an alert object or an array of them, not a string"),
        (42, "body", 400, "not a number"),
        (None, "body", 400, "not null"),
        ([], "body", 422, "holds no alert"),
        ({"alerts": []}, "alerts", 422, "holds no alert"),
        ({"alerts": {"text": "a"}}, "alerts", 422, "must be an array of alert objects, not an object"),
        ({"alerts": [{"text": "a"}], "extra": 1}, "extra", 422, "the body holds only 'alerts'"),
        (["a"], "[0]", 422, "must be an alert object, not a string"),
        ({"alerts": [{"text": "a"}, 7]}, "alerts[1]", 422, "must be an alert object, not a number"),
        ({}, "text", 422, "is required"),
        ({"severity": "info"}, "text", 422, "is required"),
        ({"text": None}, "text", 422, "is required"),
        ({"text": ""}, "text", 422, "must not be empty"),
        ({"text": " \n\t"}, "text", 422, "must not be empty"),
        ({"text": 5}, "text", 422, "must be a string, not a number"),
        ({"text": ["a"]}, "text", 422, "must be a string, not an array"),
        ({"text": "x" * 1001}, "text", 422, "is 1001 characters long; at most 1000 are allowed"),
        ({"text": "a", "serverity": "info"}, "serverity", 422, "is not a known field (known: groups, key, "),
        ({"text": "a", "alerts": []}, "alerts", 422, "is not a known field"),
        ({"text": "a", "severity": "urgent"}, "severity", 422, "'urgent' is not one of debug, info, warning"),
        ({"text": "a", "severity": 3}, "severity", 422, "must be a string, not a number"),
        ({"text": "a", "severity": True}, "severity", 422, "must be a string, not a boolean"),
        ({"text": "a", "key": ""}, "key", 422, "must not be empty"),
        ({"text": "a", "key": 12}, "key", 422, "must be a string"),
        ({"text": "a", "key": "k" * 201}, "key", 422, "at most 200"),
        ({"text": "a", "source": "s" * 101}, "source", 422, "at most 100"),
        ({"text": "a", "source": {}}, "source", 422, "must be a string, not an object"),
        ({"text": "a", "source": "cron\u202ebackup"}, "source", 422, "no control or bidirectional"),
        ({"text": "a", "source": "cron\nbackup"}, "source", 422, "must be one line of visible characters"),
        ({"text": "a", "groups": []}, "groups", 422, "names no group or phone number"),
        ({"text": "a", "groups": ""}, "groups", 422, "must not be empty"),
        ({"text": "a", "groups": "oncall,,dba"}, "groups", 422, "must not be empty"),
        ({"text": "a", "groups": ["oncall", ""]}, "groups[1]", 422, "must not be empty"),
        ({"text": "a", "groups": ["oncall", 5]}, "groups[1]", 422, "must be a string, not a number"),
        ({"text": "a", "groups": 5}, "groups", 422, "must be a string or an array of strings"),
        ({"text": "a", "groups": ["g" * 101]}, "groups[0]", 422, "at most 100"),
        ({"text": "a", "groups": [f"g{i}" for i in range(101)]}, "groups", 422, "names 101 recipients"),
        ({"text": "a", "tags": "disk"}, "tags", 422, "must be an array of strings, not a string"),
        ({"text": "a", "tags": ["ok", None]}, "tags[1]", 422, "must be a string, not null"),
        ({"text": "a", "tags": [""]}, "tags[0]", 422, "must not be empty"),
        ({"text": "a", "tags": [f"t{i}" for i in range(101)]}, "tags", 422, "holds 101 tags"),
        ([{"text": "a"}, {"text": ""}], "[1].text", 422, "must not be empty"),
        (
            {"alerts": [{"text": "a"}, {"text": "b", "severity": "x"}]},
            "alerts[1].severity",
            422,
            "'x' is not",
        ),
    ],
)
def test_parse_alerts_errors(data: object, field: str, status: int, rule: str) -> None:
    with pytest.raises(PayloadError) as exc_info:
        parse_alerts(data)
    raises(exc_info, field, status, rule)


@pytest.mark.parametrize(
    ("data", "field"),
    [([{"text": "a"}] * 3, "body"), ({"alerts": [{"text": "a"}] * 3}, "alerts")],
)
def test_parse_alerts_max_alerts(data: object, field: str) -> None:
    assert len(parse_alerts(data, max_alerts=3)) == 3
    with pytest.raises(PayloadError) as exc_info:
        parse_alerts(data, max_alerts=2)
    raises(exc_info, field, 422, "holds 3 alerts; at most 2 are accepted at once")


def test_payload_error_is_a_value_error() -> None:
    err = PayloadError("alerts[2].labels.severity", "must be a string, not a number")
    assert isinstance(err, ValueError)
    assert (err.field, err.rule, err.status) == (
        "alerts[2].labels.severity",
        "must be a string, not a number",
        422,
    )
    assert str(err) == "alerts[2].labels.severity: must be a string, not a number"
    assert PayloadError("body", "is not JSON", status=400).status == 400


# --- secrets and long values in error messages ------------------------------------------------

TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"  # a GitHub token's shape, not a real one
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    ("parse", "data", "secret"),
    [
        (parse_alerts, {"text": "a", "severity": TOKEN}, TOKEN),
        (parse_alerts, {"text": "a", "severity": f"Bearer {JWT}"}, JWT),
        (parse_alerts, {"text": "a", "severity": "password=hunter2"}, "hunter2"),
        (parse_alerts, {"text": "a", "severity": "api_key: abc"}, "abc"),
        (parse_alerts, {"text": "a", TOKEN: 1}, TOKEN),
        (parse_alerts, {"text": "a", f"x-{JWT}": 1}, JWT),
        (parse_alertmanager, am_body(am_alert({"alertname": "A"}, status=TOKEN)), TOKEN),
        (parse_alertmanager, am_body({"labels": {"alertname": "A", TOKEN: 5}}), TOKEN),
        (parse_grafana, {**GRAFANA_LEGACY, "ruleId": f"token {TOKEN}"}, TOKEN),
        (parse_grafana, {**GRAFANA_LEGACY, "state": JWT}, JWT),
    ],
)
def test_errors_never_echo_secrets(parse: Any, data: object, secret: str) -> None:
    with pytest.raises(PayloadError) as exc_info:
        parse(data)
    message = str(exc_info.value)
    assert secret not in message
    assert secret[:12] not in message
    assert "***" in message


def test_errors_never_echo_a_registered_secret() -> None:
    api_token = "plain" + secrets.token_hex(3)  # short and lower-case: no heuristic would catch it
    register_secret(api_token)
    with pytest.raises(PayloadError) as exc_info:
        parse_alerts({"text": "a", "severity": api_token})
    assert api_token not in str(exc_info.value)


def test_field_names_are_shown_even_when_they_mention_tokens() -> None:
    with pytest.raises(PayloadError) as exc_info:
        parse_alerts({"text": "a", "api_token": "x"})
    assert exc_info.value.field == "api_token"


@pytest.mark.parametrize(
    ("parse", "data"),
    [
        (parse_alerts, {"text": "a", "severity": "very long severity " * 20}),
        (parse_alerts, {"text": "a", "unknown field " * 20: 1}),
        (parse_alertmanager, am_body(am_alert({"alertname": "A"}, status="nearly firing " * 20))),
        (parse_grafana, {**GRAFANA_LEGACY, "state": "alerting but not quite " * 10}),
    ],
)
def test_errors_truncate_long_values(parse: Any, data: object) -> None:
    with pytest.raises(PayloadError) as exc_info:
        parse(data)
    message = str(exc_info.value)
    assert "..." in message
    quoted = [*re.findall(r"'([^']*)'", exc_info.value.rule), exc_info.value.field]
    assert max(len(q) for q in quoted) <= 60, message


# --- Alertmanager: real payloads ---------------------------------------------------------------


def test_alertmanager_real_firing() -> None:
    assert parse_alertmanager(AM_FIRING) == [
        AlertSpec(
            text="DiskFull (db1:9100): Disk /var is 97% full",
            severity="critical",
            key="am:e477123b6a001313:firing",
            groups=("oncall", "dba"),
            source="alertmanager/sms.relay",  # arrives as "sms\\.relay" (Go's regexp.QuoteMeta)
            tags=(
                "alertmanager",
                "firing",
                "alertname=DiskFull",
                "severity=critical",
                "instance=db1:9100",
                "job=node",
            ),
            lifecycle="am:e477123b6a001313@2026-11-25T19:55:48Z",
            labels=(  # every label, sorted: silences match them
                ("alertname", "DiskFull"),
                ("instance", "db1:9100"),
                ("job", "node"),
                ("severity", "critical"),
                ("sms_groups", "oncall,dba"),
            ),
        )
    ]


def test_alertmanager_real_resolved_keeps_severity_and_groups() -> None:
    [firing] = parse_alertmanager(AM_FIRING)
    [resolved] = parse_alertmanager(AM_RESOLVED)
    assert resolved.text == firing.text and (resolved.resolved, firing.resolved) == (True, False)
    assert resolved.lifecycle == firing.lifecycle  # one firing, from its start to its resolve
    assert resolved.key == "am:e477123b6a001313:resolved" != firing.key
    assert (resolved.severity, resolved.groups, resolved.source) == (
        firing.severity,
        firing.groups,
        firing.source,
    )
    assert resolved.tags[:2] == ("alertmanager", "resolved")


def test_alertmanager_real_mixed_group_uses_each_alerts_status() -> None:
    specs = parse_alertmanager(AM_MIXED)
    assert [(s.key, s.text, s.severity, s.resolved) for s in specs] == [
        ("am:e2a20d51f19af4c6:resolved", "HighLoad (web1)", "error", True),
        ("am:8982985a10d44fbe:firing", "HighLoad (web2): load 12", "warning", False),
    ]


@pytest.mark.parametrize("body", [AM_FIRING, AM_RESOLVED, AM_MIXED], ids=["firing", "resolved", "mixed"])
def test_derived_fingerprint_is_alertmanagers_own(body: dict[str, Any]) -> None:
    stripped = copy.deepcopy(body)
    for alert in stripped["alerts"]:
        del alert["fingerprint"]
    assert [s.key for s in parse_alertmanager(stripped)] == [s.key for s in parse_alertmanager(body)]


def test_labels_fingerprint_of_no_labels() -> None:
    assert labels_fingerprint({}) == "cbf29ce484222325"  # FNV-1a 64 offset basis, as in prometheus/common


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (AM_FIRING, ["am:e477123b6a001313:firing"]),
        (AM_RESOLVED, []),
        (AM_MIXED, ["am:8982985a10d44fbe:firing"]),
    ],
    ids=["firing", "resolved", "mixed"],
)
def test_alertmanager_send_resolved_false_skips_resolved(body: dict[str, Any], expected: list[str]) -> None:
    specs = parse_alertmanager(body, options=WebhookOptions(send_resolved=False))
    assert [s.key for s in specs] == expected


# --- Alertmanager: rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "annotations", "text"),
    [
        (
            {"alertname": "A", "instance": "h:9100"},
            {"summary": "S", "description": "D", "message": "M"},
            "A (h:9100): S",
        ),
        ({"alertname": "A"}, {"description": "D", "message": "M"}, "A: D"),
        ({"alertname": "A"}, {"message": "M"}, "A: M"),
        ({"alertname": "A"}, {"summary": "  ", "description": "D"}, "A: D"),
        ({"alertname": "A", "job": "node", "env": "prod"}, {}, "A: env=prod job=node"),
        ({"alertname": "A", "instance": "h", "job": "node"}, {"runbook_url": "u"}, "A (h): job=node"),
        ({"alertname": "A", "severity": "warning", "sms_groups": "x"}, {}, "A"),  # shown elsewhere already
        ({"alertname": "A", "empty": ""}, {}, "A"),
        ({"job": "node"}, {}, "Alert: job=node"),
        ({"alertname": "A"}, {"summary": "line one\n\n   line two\t end"}, "A: line one line two end"),
    ],
)
def test_alertmanager_text(labels: dict[str, str], annotations: dict[str, str], text: str) -> None:
    [spec] = parse_alertmanager(am_body(am_alert(labels, annotations)))
    assert spec.text == text
    [resolved] = parse_alertmanager(am_body(am_alert(labels, annotations, status="resolved")))
    assert resolved.text == text and resolved.resolved


@pytest.mark.parametrize(
    ("summary", "end"),
    [("disk " * 300, "..."), ("ডিস্ক ভর্তি " * 150, "…")],
    ids=["gsm7", "ucs2"],
)
def test_alertmanager_long_text_is_cut_with_a_marker_of_its_encoding(summary: str, end: str) -> None:
    [spec] = parse_alertmanager(am_body(am_alert({"alertname": "A"}, {"summary": summary})))
    assert len(spec.text) <= 1000
    assert spec.text.endswith(end)


@pytest.mark.parametrize(
    ("label", "options", "severity"),
    [
        *[(value, WebhookOptions(), sev) for value, sev in DEFAULT_SEVERITY_MAP.items()],
        ("CRITICAL", WebhookOptions(), "critical"),
        (" P1 ", WebhookOptions(), "critical"),
        ("debug", WebhookOptions(), "debug"),  # our own names work without a map entry
        ("crit", WebhookOptions(), "critical"),
        ("disaster", WebhookOptions(), "error"),
        ("disaster", WebhookOptions(default_severity="warn"), "warning"),
        (None, WebhookOptions(), "error"),
        (None, WebhookOptions(default_severity="critical"), "critical"),
        ("disaster", WebhookOptions(severity_map={"Disaster": "crit"}), "critical"),
        (
            "page",
            WebhookOptions(severity_map={"disaster": "critical"}),
            "error",
        ),  # a map replaces the default
    ],
)
def test_alertmanager_severity(label: str | None, options: WebhookOptions, severity: str) -> None:
    labels = {"alertname": "A"} | ({"severity": label} if label is not None else {})
    [spec] = parse_alertmanager(am_body(am_alert(labels)), options=options)
    assert spec.severity == severity


def test_alertmanager_severity_label_is_configurable() -> None:
    labels = {"alertname": "A", "severity": "info", "priority": "P1"}
    [spec] = parse_alertmanager(am_body(am_alert(labels)), options=WebhookOptions(severity_label="priority"))
    assert spec.severity == "critical"
    assert "priority=P1" in spec.tags and "severity=info" not in spec.tags


@pytest.mark.parametrize(
    ("labels", "options", "groups"),
    [
        ({"sms_groups": "oncall"}, WebhookOptions(), ("oncall",)),
        ({"sms_groups": "oncall, dba,,oncall, "}, WebhookOptions(), ("oncall", "dba")),
        ({"sms_groups": " , "}, WebhookOptions(), None),
        ({"sms_groups": "x" * 101 + ",dba"}, WebhookOptions(), ("dba",)),  # dropped, not refused
        ({}, WebhookOptions(), None),
        ({"team": "db"}, WebhookOptions(groups_label="team"), ("db",)),
        ({"sms_groups": "oncall"}, WebhookOptions(groups=("01712345678",)), ("01712345678",)),
        ({}, WebhookOptions(groups=("managers", " oncall ")), ("managers", "oncall")),
    ],
)
def test_alertmanager_groups(
    labels: dict[str, str], options: WebhookOptions, groups: tuple[str, ...] | None
) -> None:
    [spec] = parse_alertmanager(am_body(am_alert({"alertname": "A", **labels})), options=options)
    assert spec.groups == groups


@pytest.mark.parametrize(
    ("top", "source"),
    [
        ({"receiver": "node-exporter"}, "alertmanager/node-exporter"),
        ({"receiver": "sms\\.relay\\+\\(bd\\)"}, "alertmanager/sms.relay+(bd)"),
        ({"receiver": "back\\slash"}, "alertmanager/back\\slash"),  # only Go's quoting is undone
        ({"receiver": ""}, "alertmanager"),
        ({"receiver": None}, "alertmanager"),
        ({"receiver": "r" * 200}, "alertmanager/" + "r" * 84 + "..."),
    ],
)
def test_alertmanager_source(top: dict[str, Any], source: str) -> None:
    [spec] = parse_alertmanager(am_body(am_alert({"alertname": "A"}), **top))
    assert spec.source == source


def test_alertmanager_source_without_receiver_field() -> None:
    body = am_body(am_alert({"alertname": "A"}))
    del body["receiver"]
    assert parse_alertmanager(body)[0].source == "alertmanager"


@pytest.mark.parametrize(
    ("labels", "tags"),
    [
        ({"alertname": "A"}, ("alertmanager", "firing", "alertname=A")),
        (
            {"alertname": "A", "severity": "page", "instance": "h", "job": "j", "env": "prod"},
            ("alertmanager", "firing", "alertname=A", "severity=page", "instance=h", "job=j"),
        ),
        ({"env": "prod"}, ("alertmanager", "firing")),
    ],
)
def test_alertmanager_tags(labels: dict[str, str], tags: tuple[str, ...]) -> None:
    [spec] = parse_alertmanager(am_body(am_alert(labels)))
    assert spec.tags == tags


@pytest.mark.parametrize(
    "change",
    [
        {"version": "5"},
        {"version": None},
        {"shinyNewField": {"nested": [1, 2]}},
        {"status": "weird"},  # top-level status is not ours to judge: each alert has its own
        {"groupLabels": None, "commonLabels": None, "commonAnnotations": None, "externalURL": 3},
    ],
)
def test_alertmanager_accepts_other_versions_and_unknown_fields(change: dict[str, Any]) -> None:
    body = {**AM_FIRING, **change}
    assert parse_alertmanager(body) == parse_alertmanager(AM_FIRING)


def test_alertmanager_without_version_or_top_level_fields() -> None:
    body = {"alerts": [am_alert({"alertname": "A"})]}
    assert [s.key for s in parse_alertmanager(body)] == [
        f"am:{labels_fingerprint({'alertname': 'A'})}:firing"
    ]


@pytest.mark.parametrize("alert_status", [None, ""])
@pytest.mark.parametrize("group_status", ["firing", "resolved"])
def test_alert_without_status_takes_the_groups(alert_status: str | None, group_status: str) -> None:
    alert = {"labels": {"alertname": "A"}, "status": alert_status}
    [spec] = parse_alertmanager({"status": group_status, "alerts": [alert]})
    assert spec.key is not None and spec.key.endswith(":" + group_status)


def test_alertmanager_annotations_of_the_wrong_shape_only_change_the_wording() -> None:
    wrongs: list[object] = [None, [], "x", {"summary": 5, "description": "D"}]
    for wrong in wrongs:
        alert = am_alert({"alertname": "A"})
        alert["annotations"] = wrong
        [spec] = parse_alertmanager(am_body(alert))
        assert spec.text == ("A: D" if isinstance(wrong, dict) else "A")


def test_alertmanager_empty_alerts_gives_nothing() -> None:
    assert parse_alertmanager(am_body()) == []


@pytest.mark.parametrize(
    ("data", "field", "status", "rule"),
    [
        ([AM_FIRING], "body", 400, "must be a JSON object, not an array"),
        ("firing", "body", 400, "not a string"),
        (None, "body", 400, "not null"),
        ({"version": "4"}, "alerts", 422, "is required"),
        ({"alerts": None}, "alerts", 422, "is required"),
        ({"alerts": {"labels": {}}}, "alerts", 422, "must be an array of alert objects, not an object"),
        ({"alerts": "x"}, "alerts", 422, "not a string"),
        (
            am_body(am_alert({"alertname": "A"}), "x"),
            "alerts[1]",
            422,
            "must be an alert object, not a string",
        ),
        (am_body({"status": "firing"}), "alerts[0].labels", 422, "is required"),
        (am_body({"labels": None}), "alerts[0].labels", 422, "is required"),
        (
            am_body({"labels": ["alertname=A"]}),
            "alerts[0].labels",
            422,
            "must be an object of strings, not an array",
        ),
        (
            am_body(am_alert({"alertname": "A"}), {"labels": {"alertname": "A", "severity": 2}}),
            "alerts[1].labels.severity",
            422,
            "must be a string, not a number",
        ),
        (am_body(am_alert({"alertname": "A"}, status="pending")), "alerts[0].status", 422, "not 'pending'"),
        (am_body(am_alert({"alertname": "A"}, status=1)), "alerts[0].status", 422, "not a number"),
        (
            am_body(am_alert({"alertname": "A"}, fingerprint=123)),
            "alerts[0].fingerprint",
            422,
            "must be a string",
        ),
        (
            am_body(am_alert({"alertname": "A"}, fingerprint="f" * 65)),
            "alerts[0].fingerprint",
            422,
            "at most 64",
        ),
        (
            am_body(am_alert({"alertname": "A"}, fingerprint="a b")),
            "alerts[0].fingerprint",
            422,
            "without spaces",
        ),
        (
            am_body(am_alert({"alertname": "A"}), receiver=7),
            "receiver",
            422,
            "must be a string, not a number",
        ),
    ],
)
def test_alertmanager_errors(data: object, field: str, status: int, rule: str) -> None:
    with pytest.raises(PayloadError) as exc_info:
        parse_alertmanager(data)
    raises(exc_info, field, status, rule)


# --- WebhookOptions ---------------------------------------------------------------------------------


def test_webhook_options_defaults() -> None:
    options = WebhookOptions()
    assert (options.send_resolved, options.severity_label, options.groups_label) == (
        True,
        "severity",
        "sms_groups",
    )
    assert dict(options.severity_map) == dict(DEFAULT_SEVERITY_MAP)
    assert (options.default_severity, options.groups) == ("error", None)


def test_webhook_options_normalise_and_freeze() -> None:
    options = WebhookOptions(
        severity_map={" SEV1 ": "CRIT"},
        default_severity="Warn",
        groups=["a", "a", " b"],  # type: ignore[arg-type]  # a list from a config file still works
    )
    assert dict(options.severity_map) == {"sev1": "critical"}
    assert options.default_severity == "warning"
    assert options.groups == ("a", "b")
    with pytest.raises(TypeError):
        options.severity_map["x"] = "info"  # type: ignore[index]
    with pytest.raises(AttributeError):
        options.send_resolved = False  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"default_severity": "urgent"},
        {"severity_map": {"p0": "catastrophic"}},
        {"groups": ()},
        {"groups": ("oncall", " ")},
    ],
)
def test_webhook_options_refuse_bad_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        WebhookOptions(**kwargs)


# --- Grafana unified alerting -------------------------------------------------------------------


def test_grafana_documented_payload() -> None:
    assert parse_grafana(GRAFANA_DOC) == [
        AlertSpec(
            text="High memory usage: This alert was triggered for zone us-1",
            severity="error",
            key="grafana:c6eadffa33fcdf37:firing",
            groups=None,
            source="grafana/My Super Webhook",
            tags=("grafana", "firing", "alertname=High memory usage"),
            lifecycle="grafana:c6eadffa33fcdf37@2021-10-12T09:51:03.157076+02:00",
            labels=(("alertname", "High memory usage"), ("team", "blue"), ("zone", "us-1")),
        ),
        AlertSpec(
            text="High CPU usage: This alert was triggered for zone eu-1",
            severity="error",
            key="grafana:bc97ff14869b13e3:firing",
            groups=None,
            source="grafana/My Super Webhook",
            tags=("grafana", "firing", "alertname=High CPU usage"),
            lifecycle="grafana:bc97ff14869b13e3@2021-10-12T09:56:03.157076+02:00",
            labels=(("alertname", "High CPU usage"), ("team", "blue"), ("zone", "eu-1")),
        ),
    ]


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"annotations": {"description": "D"}}, "High memory usage: D"),
        ({"annotations": {}}, "High memory usage: value=14151"),  # never the raw valueString
        ({"annotations": {}, "valueString": ""}, "High memory usage: team=blue zone=us-1"),
        (
            {"annotations": {}, "valueString": None, "values": {"B": 44.23943737541908, "C": 1}},
            "High memory usage: B=44.24 C=1",
        ),
        (
            {"annotations": {}, "valueString": "", "values": {"B": "x", "C": True}},
            "High memory usage: team=blue zone=us-1",
        ),
        ({"annotations": {}, "valueString": 5, "values": None}, "High memory usage: team=blue zone=us-1"),
    ],
)
def test_grafana_text_falls_back_to_values(change: dict[str, Any], text: str) -> None:
    body = {**GRAFANA_DOC, "alerts": [{**GRAFANA_9_ALERT, **change}]}
    [spec] = parse_grafana(body)
    assert spec.text == text


# Shaped after Grafana's source (grafana/alerting templates.ExtendedAlert; ngalert
# state.StateToPostableAlert and errorAlert/noDataAlert; eval.extractEvalString), for a
# Grafana 11 rule created with no annotations, which is Grafana's default.
GRAFANA_DEFAULT = load("grafana_default_firing.json")
GRAFANA_ERRORS = load("grafana_datasource_error.json")


def test_grafana_default_rules_read_as_name_and_values() -> None:
    first, second = parse_grafana(GRAFANA_DEFAULT)
    assert first == AlertSpec(
        text="High CPU (web1:9100): A=93.51 C=1",
        severity="error",
        key="grafana:3e5a3d8bd38a4c4a:firing",
        groups=None,
        source="grafana/sms-relay",
        tags=("grafana", "firing", "alertname=High CPU", "instance=web1:9100", "job=node"),
        lifecycle="grafana:3e5a3d8bd38a4c4a@2026-11-26T02:58:10Z",
        labels=(
            ("alertname", "High CPU"),
            ("grafana_folder", "Infra"),
            ("instance", "web1:9100"),
            ("job", "node"),
        ),
    )
    # "values" is null when one is NaN (Go's JSON refuses it): read out of valueString
    assert second.text == "Orders queue backlog: A=12346 B=NaN C=1"


def test_grafana_datasource_error_pages_the_cause_not_the_summary() -> None:
    error, no_data = parse_grafana(GRAFANA_ERRORS)
    assert error == AlertSpec(
        text=(
            'DatasourceError (rule: High CPU): failed to execute query [A]: Post "http://prometheus:9090'
            '/api/v1/query": dial tcp 10.0.0.5:9090: connect: connection refused'
        ),
        severity="critical",
        key="grafana:5b1e0c9d7a3f6e21:firing",
        groups=None,
        source="grafana/sms-relay",
        tags=("grafana", "firing", "alertname=DatasourceError", "severity=critical"),
        lifecycle="grafana:5b1e0c9d7a3f6e21@2026-11-26T03:01:10Z",
        labels=(
            ("alertname", "DatasourceError"),
            ("grafana_folder", "Infra"),
            ("rulename", "High CPU"),
            ("severity", "critical"),
        ),
    )
    assert no_data.text == "DatasourceNoData (rule: Orders queue backlog)"


CPU_LABELS = {"alertname": "High CPU", "instance": "web1"}


@pytest.mark.parametrize(
    ("alert", "text"),
    [
        # 1. the summary (then description, message), as for Alertmanager
        (
            {"annotations": {"summary": "CPU 93% on web1", "description": "d"}, "values": {"A": 93.5}},
            "High CPU (web1): CPU 93% on web1",
        ),
        ({"annotations": {"description": "busy", "runbook_url": "https://x"}}, "High CPU (web1): busy"),
        # 2. an Error annotation wins over the summary (templated from values nobody measured)
        (
            {"annotations": {"summary": "CPU above 90%", "Error": "[sse.dataQueryError] query timed out"}},
            "High CPU (web1): error: query timed out",
        ),
        (
            {"annotations": {"Error": "  context deadline exceeded "}},
            "High CPU (web1): error: context deadline exceeded",
        ),
        (
            {"annotations": {"Error": "[A] no such ref"}},
            "High CPU (web1): error: [A] no such ref",
        ),  # not an id
        ({"annotations": {"Error": ""}, "values": {"A": 1}}, "High CPU (web1): A=1"),
        # 3. values, in their order, numbers as people read them
        ({"values": {"A": 93.5, "C": 1}}, "High CPU (web1): A=93.5 C=1"),
        ({"values": {"B": 14151.331895396988, "C": 1.0}}, "High CPU (web1): B=14151 C=1"),
        ({"values": {"A": 1e-5, "B": -0.5, "C": 0}}, "High CPU (web1): A=0.00001 B=-0.5 C=0"),
        ({"values": {"A": 5e9}}, "High CPU (web1): A=5e+09"),
        ({"values": {f"Q{i}": i for i in range(8)}}, "High CPU (web1): Q0=0 Q1=1 Q2=2 Q3=3 Q4=4 +3 more"),
        ({"values": {"A": "93.5", "B": None, "C": True}}, "High CPU (web1)"),  # not numbers: skipped
        # ...valueString only when values has none
        (
            {"values": {"A": 93.5}, "valueString": "[ var='A' labels={instance=web1} value=11 ]"},
            "High CPU (web1): A=93.5",
        ),
        (
            {
                "values": None,
                "valueString": (
                    "[ var='A' labels={instance=web1} value=93.5 ], "
                    "[ var='C' labels={instance=web1} value=1 ]"
                ),
            },
            "High CPU (web1): A=93.5 C=1",
        ),
        (
            {"valueString": "[ var='A' labels={} value=1.2345678e+06 ], [ var='B' labels={} value=+Inf ]"},
            "High CPU (web1): A=1234568 B=+Inf",
        ),
        (
            {"valueString": "[ var='A' labels={} value=-Inf ], [ var='B' labels={} value=null ]"},
            "High CPU (web1): A=-Inf B=null",
        ),
        # classic conditions name the var (B0, B1) and the metric; before Grafana 9 only the metric
        (
            {
                "valueString": (
                    "[ var='B0' metric='Count' labels={} value=3 ], "
                    "[ var='B1' metric='Max' labels={} value=7.25 ]"
                )
            },
            "High CPU (web1): B0=3 B1=7.25",
        ),
        ({"valueString": "[ metric='' labels={} value=14151.331895396988 ]"}, "High CPU (web1): value=14151"),
        ({"valueString": "[ metric='cpu' labels={} value=0.5 ]"}, "High CPU (web1): cpu=0.5"),
        # label values holding braces or "value=" do not confuse the reader
        (
            {"valueString": "[ var='A' labels={path=/a} value=9}, x=y} value=42 ]"},
            "High CPU (web1): A=42",
        ),
        # 4. a valueString that cannot be read gives the labels, never the raw dump
        ({"valueString": "A is 93.5"}, "High CPU (web1)"),
        ({"valueString": "[ var='A' labels={instance=web1} ]"}, "High CPU (web1)"),
    ],
)
def test_grafana_text_rules(alert: dict[str, Any], text: str) -> None:
    body = {**GRAFANA_DOC, "alerts": [{"labels": CPU_LABELS, "fingerprint": "0123456789abcdef", **alert}]}
    [spec] = parse_grafana(body)
    assert spec.text == text
    assert "var=" not in spec.text and "labels={" not in spec.text


@pytest.mark.parametrize(
    ("labels", "annotations", "text"),
    [
        (
            {"alertname": "DatasourceError", "rulename": "High CPU"},
            {
                "Error": "[plugin.downstreamError] client: failed to call resources: 502",
                "summary": "CPU high",
            },
            "DatasourceError (rule: High CPU): client: failed to call resources: 502",
        ),
        ({"alertname": "DatasourceError", "rulename": "High CPU"}, {}, "DatasourceError (rule: High CPU)"),
        ({"alertname": "DatasourceError"}, {"Error": "timeout"}, "DatasourceError: timeout"),
        (
            {"alertname": "DatasourceError", "rulename": "High CPU", "instance": "web1"},
            {"Error": "timeout"},
            "DatasourceError (rule: High CPU, instance: web1): timeout",
        ),
        (
            {"alertname": "DatasourceNoData", "rulename": "High CPU", "ref_id": "A"},
            {"summary": "CPU above 90%"},
            "DatasourceNoData (rule: High CPU)",
        ),
        # a rule of one's own that happens to have the word in its name is read as any other
        ({"alertname": "DatasourceErrors high"}, {"summary": "s"}, "DatasourceErrors high: s"),
    ],
)
def test_grafana_datasource_alerts(labels: dict[str, str], annotations: dict[str, str], text: str) -> None:
    body = {**GRAFANA_DOC, "alerts": [{"labels": labels, "annotations": annotations, "values": {"A": 1}}]}
    [spec] = parse_grafana(body)
    assert spec.text == text


def test_grafana_resolved_datasource_error() -> None:
    body = copy.deepcopy(GRAFANA_ERRORS)
    body["alerts"][0]["status"] = "resolved"
    spec = parse_grafana(body)[0]
    assert spec.text.startswith("DatasourceError (rule: High CPU): failed to execute query [A]")
    assert spec.resolved
    assert spec.key == "grafana:5b1e0c9d7a3f6e21:resolved"


def test_alertmanager_texts_keep_their_rules() -> None:
    # the Grafana rules are Grafana's: an Alertmanager alert with these fields reads as before
    alert = am_alert(
        {"alertname": "High CPU", "instance": "web1", "zone": "eu"},
        {"Error": "boom", "summary": "CPU high"},
        values={"A": 1},
        valueString="[ var='A' labels={} value=1 ]",
    )
    [spec] = parse_alertmanager(am_body(alert))
    assert spec.text == "High CPU (web1): CPU high"
    del alert["annotations"]["summary"]
    [spec] = parse_alertmanager(am_body(alert))
    assert spec.text == "High CPU (web1): zone=eu"


def test_grafana_bidi_and_control_characters_never_reach_the_text() -> None:
    body = copy.deepcopy(GRAFANA_DEFAULT)
    body["receiver"] = "sms\u202e-relay\x1b[31m"
    body["alerts"][0]["labels"]["instance"] = "web1\u2066:9100\u2069"
    body["alerts"][0]["annotations"] = {"summary": "CPU \u202e%39\u202c on\tweb1\u200f\r\nnow"}
    first, second = parse_grafana(body)
    assert first.text == "High CPU (web1:9100): CPU %39 on web1 now"
    assert first.source == second.source == "grafana/sms-relay"
    assert "instance=web1:9100" in first.tags


def test_grafana_resolved_and_options() -> None:
    body = copy.deepcopy(GRAFANA_DOC)
    body["status"] = "resolved"
    body["alerts"][0]["status"] = "resolved"
    body["alerts"][0]["labels"] |= {"severity": "warning", "sms_groups": "infra"}
    first, second = parse_grafana(body)
    assert first.text == "High memory usage: This alert was triggered for zone us-1" and first.resolved
    assert first.key == "grafana:c6eadffa33fcdf37:resolved"
    assert (first.severity, first.groups) == ("warning", ("infra",))
    assert first.tags == ("grafana", "resolved", "alertname=High memory usage", "severity=warning")
    assert second.key == "grafana:bc97ff14869b13e3:firing"
    assert [s.key for s in parse_grafana(body, options=WebhookOptions(send_resolved=False))] == [second.key]
    [only] = parse_grafana({**body, "alerts": body["alerts"][1:]}, options=WebhookOptions(groups=("noc",)))
    assert only.groups == ("noc",)


@pytest.mark.parametrize("labels", ["missing", None])
def test_grafana_alert_without_labels_still_pages(labels: str | None) -> None:
    # Grafana retries no 4xx: refusing it would lose the page for good
    alert = {k: v for k, v in GRAFANA_DOC["alerts"][0].items() if k != "labels"}
    if labels is None:
        alert["labels"] = None
    [spec] = parse_grafana({**GRAFANA_DOC, "alerts": [alert]})
    assert spec == AlertSpec(
        text="Alert: This alert was triggered for zone us-1",
        severity="error",
        key="grafana:c6eadffa33fcdf37:firing",
        groups=None,
        source="grafana/My Super Webhook",
        tags=("grafana", "firing"),
        lifecycle="grafana:c6eadffa33fcdf37@2021-10-12T09:51:03.157076+02:00",
    )
    # without a fingerprint either, the key is that of an empty label set, as Alertmanager's
    del alert["fingerprint"]
    [spec] = parse_grafana({**GRAFANA_DOC, "alerts": [alert]})
    assert spec.key == f"grafana:{labels_fingerprint({})}:firing"


@pytest.mark.parametrize(
    ("data", "field", "status", "rule"),
    [
        ([GRAFANA_DOC], "body", 400, "must be a JSON object, not an array"),
        ({"receiver": "r", "status": "firing"}, "alerts", 422, "is required"),
        (
            {**GRAFANA_DOC, "alerts": [{"labels": "x"}]},
            "alerts[0].labels",
            422,
            "must be an object of strings",
        ),
        (
            {**GRAFANA_DOC, "alerts": [{**GRAFANA_9_ALERT, "labels": ["alertname=A"]}]},
            "alerts[0].labels",
            422,
            "must be an object of strings, not an array",
        ),
        (
            {**GRAFANA_DOC, "alerts": [{**GRAFANA_9_ALERT, "labels": {"severity": 1}}]},
            "alerts[0].labels.severity",
            422,
            "must be a string, not a number",
        ),
        (
            {**GRAFANA_DOC, "alerts": [{**GRAFANA_9_ALERT, "status": "alerting"}]},
            "alerts[0].status",
            422,
            "not 'alerting'",
        ),
    ],
)
def test_grafana_errors(data: object, field: str, status: int, rule: str) -> None:
    with pytest.raises(PayloadError) as exc_info:
        parse_grafana(data)
    raises(exc_info, field, status, rule)


# --- Grafana legacy alerting ------------------------------------------------------------------------


def test_grafana_legacy_documented_payload() -> None:
    assert parse_grafana(GRAFANA_LEGACY) == [
        AlertSpec(
            text="Panel Title alert: Notification Message",
            severity="error",
            key="grafana-legacy:1:alerting",
            groups=None,
            source="grafana",
            tags=("grafana", "firing", "state=alerting", "alertname=Panel Title alert"),
            # a legacy rule's tags are its labels, its name its alertname
            labels=(("alertname", "Panel Title alert"), ("tag name", "tag value")),
        )
    ]


@pytest.mark.parametrize(
    ("change", "text", "key"),
    [
        ({"state": "ok"}, "Panel Title alert: Notification Message", "grafana-legacy:1:ok"),
        ({"state": "OK"}, "Panel Title alert: Notification Message", "grafana-legacy:1:ok"),
        (
            {"state": "no_data"},
            "[NO DATA] Panel Title alert: Notification Message",
            "grafana-legacy:1:no_data",
        ),
        ({"message": None}, "Panel Title alert: Count=1", "grafana-legacy:1:alerting"),
        (
            {"message": "", "evalMatches": [{"value": 2.5, "metric": f"m{i}"} for i in range(7)]},
            "Panel Title alert: m0=2.5 m1=2.5 m2=2.5 m3=2.5 m4=2.5 +2 more",
            "grafana-legacy:1:alerting",
        ),
        ({"message": "", "evalMatches": "junk"}, "Panel Title alert", "grafana-legacy:1:alerting"),
        (
            {"ruleName": None},
            "[Alerting] Panel Title alert: Notification Message",
            "grafana-legacy:1:alerting",
        ),
        (
            {"ruleId": 3.2760766009712717e18},
            "Panel Title alert: Notification Message",
            "grafana-legacy:3276076600971271680:alerting",
        ),
        ({"ruleId": "42"}, "Panel Title alert: Notification Message", "grafana-legacy:42:alerting"),
    ],
)
def test_grafana_legacy_rules(change: dict[str, Any], text: str, key: str) -> None:
    [spec] = parse_grafana({**GRAFANA_LEGACY, **change})
    assert (spec.text, spec.key) == (text, key)


def test_grafana_legacy_without_rule_id_keys_on_the_rule_name() -> None:
    body = {k: v for k, v in GRAFANA_LEGACY.items() if k != "ruleId"}
    [spec] = parse_grafana(body)
    [again] = parse_grafana(body)
    [other] = parse_grafana({**body, "ruleName": "Other rule"})
    assert spec.key == again.key != other.key
    assert (
        spec.key is not None
        and spec.key.startswith("grafana-legacy:name-")
        and spec.key.endswith(":alerting")
    )


@pytest.mark.parametrize("state", ["paused", "pending"])
def test_grafana_legacy_states_that_do_not_page(state: str) -> None:
    assert parse_grafana({**GRAFANA_LEGACY, "state": state}) == []


def test_grafana_legacy_options() -> None:
    body = {**GRAFANA_LEGACY, "tags": {"severity": "P1", "sms_groups": "noc,dba"}}
    [spec] = parse_grafana(body)
    assert (spec.severity, spec.groups) == ("critical", ("noc", "dba"))
    assert spec.tags[-1] == "severity=P1"
    assert parse_grafana({**body, "state": "ok"}, options=WebhookOptions(send_resolved=False)) == []
    [spec] = parse_grafana(body, options=WebhookOptions(groups=("01712345678",)))
    assert spec.groups == ("01712345678",)


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"state": None}, "state", "is required (one of alerting, ok, no_data, paused, pending)"),
        ({"state": "firing"}, "state", "'firing' is not a legacy alert state"),
        ({"state": 1}, "state", "a number is not a legacy alert state"),
        ({"ruleId": "abc"}, "ruleId", "must be a whole number, not 'abc'"),
        ({"ruleId": 1.5}, "ruleId", "must be a whole number, not a number"),
        ({"ruleId": True}, "ruleId", "must be a whole number, not a boolean"),
        ({"ruleName": 5}, "ruleName", "must be a string, not a number"),
        ({"message": ["m"]}, "message", "must be a string, not an array"),
        ({"tags": ["a"]}, "tags", "must be an object of strings, not an array"),
        ({"tags": {"severity": 1}}, "tags.severity", "must be a string, not a number"),
    ],
)
def test_grafana_legacy_errors(change: dict[str, Any], field: str, rule: str) -> None:
    with pytest.raises(PayloadError) as exc_info:
        parse_grafana({**GRAFANA_LEGACY, **change})
    raises(exc_info, field, 422, rule)


# --- numbers in webhook texts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (0.0, "0"),
        (-0.0, "0"),
        (1, "1"),
        (12.0, "12"),  # whole numbers as whole numbers
        (-7, "-7"),
        (93.5, "93.5"),
        (-93.5, "-93.5"),
        (2.50, "2.5"),  # trailing zeros go
        (44.23943737541908, "44.24"),  # four significant digits...
        (1.23456, "1.235"),
        (0.0123456, "0.01235"),
        (-0.0123456, "-0.01235"),
        (0.1 + 0.2, "0.3"),
        (12345.678, "12346"),  # ...but the whole part is never rounded away
        (14151.331895396988, "14151"),  # was "1.415e+04"
        (47043.702386305304, "47044"),
        (999.96, "1000"),  # rounding carries into a new digit
        (0.99996, "1"),
        (123456789.123, "123456789"),
        (999_999_999, "999999999"),  # the largest fixed whole number
        (1e-5, "0.00001"),  # small values in fixed notation down to 10^-6
        (-1e-5, "-0.00001"),
        (1.5e-6, "0.0000015"),
        (1e-6, "0.000001"),
        (1.5e-7, "1.5e-07"),  # below that, an exponent: nobody counts seven zeros
        (1e-300, "1e-300"),
        (1e9, "1e+09"),  # from 10^9 up, an exponent too
        (999_999_999.7, "1e+09"),  # rounds up to 10^9
        (1_000_000_000, "1e+09"),
        (1_234_567_890, "1.235e+09"),
        (-2e12, "-2e+12"),
        (1.7976931348623157e308, "1.798e+308"),
        (10**400, "1e+400"),  # a JSON integer too big for a float
        (float("nan"), "NaN"),  # JSON cannot carry these; valueString can
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
    ],
)
def test_format_number(value: float, shown: str) -> None:
    assert format_number(value) == shown


@given(st.floats() | st.integers())
def test_format_number_round_trips_to_four_digits(value: float) -> None:
    shown = format_number(value)
    assert shown == shown.strip() and " " not in shown
    if isinstance(value, float) and not math.isfinite(value):
        assert shown in ("NaN", "+Inf", "-Inf")
        return
    if "e" not in shown:
        assert 1e-6 <= abs(value) < 1e9 or value == 0
    else:
        assert abs(value) >= 999_999_999.5 or abs(value) < 1e-6
    exact = Decimal(value)
    assert abs(Decimal(shown) - exact) <= abs(exact) * Decimal("0.0005")  # four digits or more
