"""Grafana's legacy alerting webhook (Grafana < 8, or 8.x with legacy alerting)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

from .common import (
    MAX_NAME,
    MAX_TEXT,
    AlertSpec,
    PayloadError,
    Status,
    kind_of,
    shown_value,
    squash,
    webhook_labels,
)
from .options import WebhookOptions, label_groups, label_severity, string_map
from .texts import is_number, number_text, pairs_text

# --- Grafana legacy alerting ---------------------------------------------------------------

_LEGACY_STATES: Final = ("alerting", "ok", "no_data", "paused", "pending")


def grafana_legacy(data: Mapping[str, object], options: WebhookOptions) -> list[AlertSpec]:
    """Grafana < 8 (and 8.x with legacy alerting): one rule, one state, no fingerprint.

    ``paused`` and ``pending`` give no spec (legacy Grafana does not page for them);
    ``no_data`` pages like ``alerting``, marked ``[NO DATA]``.
    """
    state_value = data.get("state")
    if not isinstance(state_value, str) or state_value.strip().lower() not in _LEGACY_STATES:
        rule = (
            "is required"
            if state_value is None
            else f"{shown_value(state_value)} is not a legacy alert state"
        )
        raise PayloadError("state", f"{rule} (one of {', '.join(_LEGACY_STATES)})")
    state = state_value.strip().lower()
    if state in ("paused", "pending"):
        return []
    status: Status = "resolved" if state == "ok" else "firing"
    if status == "resolved" and not options.send_resolved:
        return []
    for name in ("ruleName", "title", "message"):
        if data.get(name) is not None and not isinstance(data.get(name), str):
            raise PayloadError(name, f"must be a string, not {kind_of(data.get(name))}")
    rule_name = (
        str(data.get("ruleName") or "").strip() or str(data.get("title") or "").strip() or "Grafana alert"
    )
    rule_id = _legacy_rule_id(data.get("ruleId"), rule_name)
    labels = string_map(data["tags"], "tags") if data.get("tags") is not None else {}
    detail = str(data.get("message") or "").strip() or _eval_matches(data.get("evalMatches"))
    text = rule_name + (f": {detail}" if detail else "")
    if state == "no_data":
        text = "[NO DATA] " + text
    tags = ["grafana", status, f"state={state}", squash(f"alertname={rule_name}", MAX_NAME)]
    if labels.get(options.severity_label, "").strip():
        tags.append(squash(f"{options.severity_label}={labels[options.severity_label]}", MAX_NAME))
    return [
        AlertSpec(
            text=squash(text, MAX_TEXT),
            severity=label_severity(labels.get(options.severity_label), options),
            key=f"grafana-legacy:{rule_id}:{state}",
            groups=label_groups(labels.get(options.groups_label), options),
            source="grafana",
            tags=tuple(dict.fromkeys(tags)),
            resolved=status == "resolved",
            # its tags are its labels; the rule's name is its alertname, as in unified alerting
            labels=webhook_labels({"alertname": rule_name, **labels}),
        )
    ]


def _legacy_rule_id(value: object, rule_name: str) -> str:
    """The numeric rule id; a hash of the rule name when a sender left it out."""
    if value is None:
        return "name-" + hashlib.blake2b(rule_name.encode(), digest_size=8).hexdigest()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 20:
        return value.strip()
    raise PayloadError("ruleId", f"must be a whole number, not {shown_value(value)}")


def _eval_matches(value: object) -> str:
    """``Count=1 errors=3.5``: what the legacy rule saw, when it carries no message."""
    if not isinstance(value, list):
        return ""
    return pairs_text(
        [
            (str(m.get("metric") or "value"), number_text(m.get("value")))
            for m in value
            if isinstance(m, dict) and is_number(m.get("value"))
        ]
    )
