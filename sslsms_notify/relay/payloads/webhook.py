"""Alertmanager's webhook (payload version 4) and Grafana's unified alerting webhook."""

from __future__ import annotations

from collections.abc import Mapping

from .common import (
    MAX_FINGERPRINT,
    MAX_NAME,
    MAX_SOURCE,
    MAX_TEXT,
    AlertSpec,
    PayloadError,
    Status,
    field_at,
    item_at,
    kind_of,
    shown_value,
    squash,
    webhook_labels,
)
from .legacy import grafana_legacy
from .options import (
    _GO_QUOTED,
    ALERTMANAGER,
    DEFAULT_OPTIONS,
    GRAFANA,
    Flavor,
    WebhookOptions,
    label_groups,
    label_severity,
    string_map,
)
from .texts import webhook_text

# --- webhooks: Alertmanager and Grafana --------------------------------------------------


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's own fingerprint of a label set (FNV-1a 64 over sorted pairs).

    Used when a webhook omits ``fingerprint``: the derived key then equals the one a
    complete payload for the same alert would give, so the two dedup together.
    """
    digest = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for byte in part:
                digest = ((digest ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"


def parse_alertmanager(data: object, *, options: WebhookOptions = DEFAULT_OPTIONS) -> list[AlertSpec]:
    """Alertmanager's webhook body (version "4"; other versions are read the same way).

    One spec per alert, key ``am:{fingerprint}:{status}``. A resolved alert keeps the
    severity and groups of its firing one: the people who were paged are the ones who
    need the all-clear, and a routing rule on severity must send it to the same phones.
    With ``send_resolved=False`` resolved alerts are left out. Unknown top-level fields
    are ignored, for payloads of later versions.
    """
    return _parse_webhook(data, options, ALERTMANAGER)


def parse_grafana(data: object, *, options: WebhookOptions = DEFAULT_OPTIONS) -> list[AlertSpec]:
    """Grafana's webhook contact point: unified alerting (version "1") or legacy alerting.

    Unified bodies follow Alertmanager's rules (key ``grafana:{fingerprint}:{status}``),
    except that an alert without ``labels`` has empty labels, and the text, first rule
    that applies:

    1. ``DatasourceError`` / ``DatasourceNoData`` (a rule that could not be evaluated):
       ``DatasourceError (rule: High CPU): <its Error annotation>``;
    2. another alert with an ``Error`` annotation: ``High CPU (web1): error: <it>``;
    3. ``summary``, ``description`` or ``message``: ``High CPU (web1): CPU at 93%``;
    4. the values: ``High CPU (web1): A=93.5 C=1`` (see :func:`format_number`);
    5. the labels: ``High CPU (web1): team=ops zone=eu``.

    A legacy body (``ruleName``, ``state``, ``evalMatches``, no ``alerts``) gives one spec
    keyed ``grafana-legacy:{ruleId}:{state}``.
    """
    if not isinstance(data, dict):
        raise PayloadError("body", f"must be a JSON object, not {kind_of(data)}", status=400)
    if "alerts" not in data and any(k in data for k in ("ruleName", "ruleId", "evalMatches")):
        return grafana_legacy(data, options)
    return _parse_webhook(data, options, GRAFANA)


def _parse_webhook(data: object, options: WebhookOptions, flavor: Flavor) -> list[AlertSpec]:
    if not isinstance(data, dict):
        raise PayloadError("body", f"must be a JSON object, not {kind_of(data)}", status=400)
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        rule = (
            "is required" if alerts is None else f"must be an array of alert objects, not {kind_of(alerts)}"
        )
        raise PayloadError("alerts", rule)
    receiver = data.get("receiver")
    if receiver is not None and not isinstance(receiver, str):
        raise PayloadError("receiver", f"must be a string, not {kind_of(receiver)}")
    receiver = _GO_QUOTED.sub(r"\1", receiver or "").strip()
    source = squash(f"{flavor.name}/{receiver}" if receiver else flavor.name, MAX_SOURCE)
    group_status = data.get("status")
    default_status: Status = "resolved" if group_status == "resolved" else "firing"
    specs = []
    for index, alert in enumerate(alerts):
        spec = _webhook_alert(alert, item_at("alerts", index), options, flavor, source, default_status)
        if spec is not None:
            specs.append(spec)
    return specs


def _labels(value: object, path: str, flavor: Flavor) -> dict[str, str]:
    """An alert's labels; for Grafana, a missing (or null) ``labels`` is an alert without any.

    Grafana retries no 4xx answer, so refusing such an alert would lose the page for good,
    and it still has a text (its annotations or values) and a fingerprint. Labels that are
    there but of the wrong type are still refused (422 naming the field): severity,
    recipients and the fallback fingerprint all come from labels, so a body whose labels
    cannot be read is not one we can route or deduplicate, and a guess would page the
    wrong phones or fold distinct alerts into one. The 422 shows in Grafana's "Test"
    button and its logs, where whoever wrote that body can see it. Alertmanager always
    sends labels: a body without them is not one of its, and is refused.
    """
    if value is None and flavor.grafana:
        return {}
    return string_map(value, path)


def loose_map(value: object) -> dict[str, str]:
    """Annotations: only wording, so entries of the wrong type are skipped, not refused."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _webhook_alert(
    alert: object,
    path: str,
    options: WebhookOptions,
    flavor: Flavor,
    source: str,
    default_status: Status,
) -> AlertSpec | None:
    if not isinstance(alert, dict):
        raise PayloadError(path, f"must be an alert object, not {kind_of(alert)}")
    labels = _labels(alert.get("labels"), field_at(path, "labels"), flavor)
    status = _alert_status(alert.get("status"), field_at(path, "status"), default_status)
    if status == "resolved" and not options.send_resolved:
        return None
    fingerprint = _fingerprint(alert.get("fingerprint"), field_at(path, "fingerprint"), labels)
    annotations = loose_map(alert.get("annotations"))
    text = webhook_text(alert, labels, annotations, options, flavor)
    starts_at = alert.get("startsAt")
    lifecycle = None
    if isinstance(starts_at, str) and starts_at.strip() and len(starts_at) <= MAX_FINGERPRINT:
        # Alertmanager gives an alert a new startsAt each time it starts firing again: the
        # pair names one firing, which re-sends of the group repeat byte for byte.
        lifecycle = f"{flavor.key_prefix}:{fingerprint}@{starts_at.strip()}"
    tag_labels = ("alertname", options.severity_label, "instance", "job")
    tags = [flavor.name, status]
    tags += [squash(f"{k}={labels[k]}", MAX_NAME) for k in tag_labels if labels.get(k, "").strip()]
    return AlertSpec(
        text=squash(text, MAX_TEXT),
        severity=label_severity(labels.get(options.severity_label), options),
        key=f"{flavor.key_prefix}:{fingerprint}:{status}",
        groups=label_groups(labels.get(options.groups_label), options),
        source=source,
        tags=tuple(dict.fromkeys(tags)),
        lifecycle=lifecycle,
        resolved=status == "resolved",
        labels=webhook_labels(labels),
    )


def _alert_status(value: object, path: str, default: Status) -> Status:
    if value is None or value == "":
        return default
    if value == "firing":
        return "firing"
    if value == "resolved":
        return "resolved"
    raise PayloadError(path, f"must be 'firing' or 'resolved', not {shown_value(value)}")


def _fingerprint(value: object, path: str, labels: Mapping[str, str]) -> str:
    if value is None or value == "":
        return labels_fingerprint(labels)
    if not isinstance(value, str):
        raise PayloadError(path, f"must be a string, not {kind_of(value)}")
    if len(value) > MAX_FINGERPRINT or not value.isprintable() or " " in value:
        raise PayloadError(path, f"must be at most {MAX_FINGERPRINT} printable characters without spaces")
    return value
