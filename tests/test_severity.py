"""One table of severity names and aliases: every door that reads a severity agrees with it."""

from __future__ import annotations

import pytest

from sslsms_notify.alerting.alert import Severity
from sslsms_notify.relay.payloads import DEFAULT_SEVERITY_MAP, parse_alerts
from sslsms_notify.severity import SEVERITIES, SEVERITY_ALIASES, SEVERITY_NAMES, severity_name


def test_the_severities_are_the_enum_s_in_order() -> None:
    assert tuple(s.name.lower() for s in sorted(Severity)) == SEVERITIES


@pytest.mark.parametrize("name", sorted(SEVERITY_NAMES))
def test_every_door_reads_every_name_alike(name: str) -> None:
    severity = SEVERITY_NAMES[name]
    for typed in (name, name.upper(), f" {name.title()} "):
        assert severity_name(typed) == severity
        assert Severity.parse(typed) is Severity[severity.upper()]
        assert parse_alerts({"text": "x", "severity": typed})[0].severity == severity


def test_nothing_else_is_a_severity() -> None:
    for text in ("page", "p1", "loud", "", "warnings"):
        assert severity_name(text) is None
        with pytest.raises(ValueError):
            Severity.parse(text)


def test_webhook_labels_are_a_different_table() -> None:
    """``page`` or ``p1`` are label values an operator maps, not names we accept elsewhere."""
    assert DEFAULT_SEVERITY_MAP["page"] == "critical" and severity_name("page") is None
    assert set(SEVERITY_ALIASES) <= set(SEVERITY_NAMES)
