"""Webhook bodies to :class:`AlertSpec` lists, for the HTTP relay (``sslsms-notify serve``).

Pure (no I/O, no web framework), so the HTTP layer stays thin and every rule here is
tested on plain data. Three kinds of body:

* our own API: :func:`parse_alerts`;
* Prometheus Alertmanager's webhook, payload version "4": :func:`parse_alertmanager`;
* Grafana's webhook contact point, unified alerting and legacy: :func:`parse_grafana`.

A refused body raises :class:`PayloadError`: the dotted path of the bad field, a rule a
person can act on, and the HTTP status to answer (400: not JSON or not the right kind
of document; 422: a well-formed body with a bad value). Error messages repeat at most
60 characters of any value and mask anything that looks like a credential.

Alertmanager and Grafana retry 5xx answers but not 4xx, so a refused webhook is a lost
page. The webhook parsers are therefore strict only where a wrong guess would misroute
or mis-deduplicate (labels, status, fingerprint, receiver) and lenient where it would
only change the wording (annotations, values, evalMatches). A Grafana alert with no
``labels`` at all is read as one with empty labels rather than refused.

Texts pass through :func:`~sslsms_notify.gateway.clean.clean_text` (no escapes, control
or bidirectional characters), then have their whitespace folded to single spaces.

Facts about Alertmanager this relies on (seen from Alertmanager 0.25, see
``tests/data/alertmanager_*.json``):

* every notification carries *all* alerts of its group: the ones still firing come
  again whenever the group changes (an alert joins or resolves) and at its
  ``repeat_interval``. Each spec therefore carries its **lifecycle**,
  ``am:{fingerprint}@{startsAt}``: the pipeline pages an alert once per lifecycle while
  it fires and once when it resolves, and a re-send is nothing new (no SMS, no "+N
  more"), however long after. An alert that fires again gets a new ``startsAt``: a new
  lifecycle. Without ``startsAt`` the key ``am:{fingerprint}:{status}`` and the dedup
  window decide, as for any other alert;
* the top-level ``status`` is "firing" while any alert of the group fires; only each
  alert's own ``status`` counts;
* ``receiver`` goes through Go's ``regexp.QuoteMeta`` (``sms.relay`` arrives as
  ``sms\\.relay``); we undo that for the SMS origin.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Final, Literal

from .._log import MASK, redact
from ..gateway.clean import clean_text
from ..gateway.text import ellipsis_for, encoding_of
from ..severity import SEVERITIES, SEVERITY_NAMES, severity_name

__all__ = [
    "DEFAULT_SEVERITY_MAP",
    "SEVERITIES",
    "AlertSpec",
    "PayloadError",
    "WebhookOptions",
    "decode_body",
    "format_number",
    "labels_fingerprint",
    "parse_alertmanager",
    "parse_alerts",
    "parse_grafana",
]

MAX_TEXT: Final = 1000  # characters of alert text (the gateway's own limit per SMS body)
MAX_KEY: Final = 200
MAX_SOURCE: Final = 100
MAX_NAME: Final = 100  # one group name, phone number or tag
MAX_ITEMS: Final = 100  # groups, or tags, of one alert
MAX_FINGERPRINT: Final = 64
SHOWN: Final = 60  # the longest piece of a value an error message repeats

#: kept for code that imported it from here: :data:`sslsms_notify.severity.SEVERITY_NAMES`
_ALIASES: Final[Mapping[str, str]] = SEVERITY_NAMES

#: label value (lower-cased) -> our severity; common Prometheus / PagerDuty conventions
DEFAULT_SEVERITY_MAP: Final[Mapping[str, str]] = MappingProxyType(
    {
        "critical": "critical",
        "page": "critical",
        "p1": "critical",
        "error": "error",
        "high": "error",
        "p2": "error",
        "warning": "warning",
        "warn": "warning",
        "medium": "warning",
        "p3": "warning",
        "info": "info",
        "low": "info",
        "p4": "info",
        "none": "info",
    }
)

Status = Literal["firing", "resolved"]


@dataclasses.dataclass(frozen=True, slots=True)
class AlertSpec:
    """One alert for the pipeline, as a webhook described it."""

    text: str  # the SMS body before the "[SEV] origin:" prefix is added
    severity: str = "error"  # one of SEVERITIES
    key: str | None = None  # dedup identity
    groups: tuple[str, ...] | None = None  # group names or phone numbers; None: routing rules decide
    source: str = ""  # shown in the SMS as origin, e.g. "alertmanager/node-exporter"
    tags: tuple[str, ...] = ()
    #: a webhook alert's identity from firing to resolved: ``am:{fingerprint}@{startsAt}``
    #: (None when the webhook gives no startsAt: the dedup window decides instead)
    lifecycle: str | None = None
    #: the alert ended: an all-clear, tagged [RESOLVED] instead of its severity
    resolved: bool = False


class PayloadError(ValueError):
    """A body the relay refuses; ``str()`` is ``"{field}: {rule}"``.

    ``field`` is a dotted path (``alerts[2].labels.severity``, ``text``, ``body`` for the
    whole document), ``rule`` a sentence, ``status`` the HTTP status to answer.
    """

    field: str
    rule: str
    status: int

    def __init__(self, field: str, rule: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.status = status


# --- showing values in error messages --------------------------------------------------

_SECRET_WORD = re.compile(
    r"bearer|basic\s|token|secret|passw|pwd|api[-_]?key|auth|private[-_]?key|credential|session|cookie|signature",
    re.IGNORECASE,
)
# A long unbroken run of token characters: an API key, a JWT, a hash, a base64 blob.
_OPAQUE = re.compile(r"[A-Za-z0-9_\-+/=.~%]{20,}")


def _is_opaque(run: str) -> bool:
    return any(c.isdigit() for c in run) and any(c.isalpha() for c in run)


def _scrub(text: str, *, is_name: bool = False) -> str:
    """A value as an error message may show it: secrets masked, at most SHOWN characters.

    A value that mentions a token, password, ... is masked whole; a field name such as
    ``api_token`` is not (naming it is the point), but opaque runs in it still are.
    """
    text = redact(text)  # secrets the process registered (the gateway's API token)
    if not is_name and _SECRET_WORD.search(text):
        return MASK
    text = _OPAQUE.sub(lambda m: MASK if _is_opaque(m.group()) else m.group(), text)
    if len(text) > SHOWN:
        text = text[: SHOWN - 3] + "..."
    return text


def _shown(value: object) -> str:
    """A string value quoted and scrubbed; anything else by its JSON type only."""
    if isinstance(value, str):
        return f"'{_scrub(value)}'"
    return _kind(value)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _at(path: str, name: object) -> str:
    """``path.name``; the name is scrubbed, since unknown field names come from the sender."""
    shown = _scrub(str(name), is_name=True)
    return f"{path}.{shown}" if path else shown


def _item(path: str, index: int) -> str:
    return f"{path}[{index}]"


# --- decoding ----------------------------------------------------------------------------


class _NotJSON(ValueError):
    pass


def _reject_constant(name: str) -> object:
    raise _NotJSON(f"{name} is not JSON")


def decode_body(raw: bytes | str) -> object:
    """Request body to data; 400 unless it is UTF-8 JSON (NaN and Infinity are not JSON)."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise PayloadError("body", "is not UTF-8 text", status=400) from None
    except json.JSONDecodeError as exc:  # its message names a position, never the content
        raise PayloadError(
            "body", f"is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", status=400
        ) from None
    except _NotJSON as exc:
        raise PayloadError("body", f"is not JSON ({exc})", status=400) from None
    except RecursionError:
        raise PayloadError("body", "is nested too deeply", status=400) from None


# --- our own API -------------------------------------------------------------------------

_API_FIELDS: Final = frozenset({"text", "severity", "key", "groups", "source", "tags"})


def parse_alerts(data: object, *, max_alerts: int = 1000) -> list[AlertSpec]:
    """Our API: one alert object, an array of them, or ``{"alerts": [...]}``.

    Strict (unknown fields are refused), because our own clients can fix what they send
    and a typo such as ``"serverity"`` must not silently page at the default severity.
    """
    if isinstance(data, dict) and "alerts" in data and "text" not in data:
        for name in data:
            if name != "alerts":
                raise PayloadError(_at("", name), "is not a field here: the body holds only 'alerts'")
        items, path = data["alerts"], "alerts"
        if not isinstance(items, list):
            raise PayloadError("alerts", f"must be an array of alert objects, not {_kind(items)}")
    elif isinstance(data, dict):
        return [_api_alert(data, "")]
    elif isinstance(data, list):
        items, path = data, ""
    else:
        raise PayloadError(
            "body", f"must be an alert object or an array of them, not {_kind(data)}", status=400
        )
    if not items:
        raise PayloadError(path or "body", "holds no alert")
    if len(items) > max_alerts:
        raise PayloadError(
            path or "body", f"holds {len(items)} alerts; at most {max_alerts} are accepted at once"
        )
    return [_api_alert(item, _item(path, i)) for i, item in enumerate(items)]


def _api_alert(item: object, path: str) -> AlertSpec:
    if not isinstance(item, dict):
        raise PayloadError(path or "body", f"must be an alert object, not {_kind(item)}")
    for name in item:
        if name not in _API_FIELDS:
            known = ", ".join(sorted(_API_FIELDS))
            raise PayloadError(_at(path, name), f"is not a known field (known: {known})")
    text = _api_str(item, "text", path, limit=MAX_TEXT)
    if text is None:
        raise PayloadError(_at(path, "text"), "is required")
    severity = _api_severity(item.get("severity"), _at(path, "severity"))
    source = _api_str(item, "source", path, limit=MAX_SOURCE) or ""
    if not all(c.isprintable() or c == " " for c in source):
        # the SMS shows it as the origin, outside the text that clean_text cleans; like
        # the CLI's --source, refused rather than silently changed
        raise PayloadError(
            _at(path, "source"), "must be one line of visible characters (no control or bidirectional ones)"
        )
    return AlertSpec(
        text=text,
        severity=severity,
        key=_api_str(item, "key", path, limit=MAX_KEY),
        groups=_api_groups(item.get("groups"), _at(path, "groups")),
        source=source,
        tags=_api_tags(item.get("tags"), _at(path, "tags")),
    )


def _checked_name(value: object, path: str, *, limit: int, what: str = "a string") -> str:
    """A non-empty stripped string of at most ``limit`` characters, or a PayloadError."""
    if not isinstance(value, str):
        raise PayloadError(path, f"must be {what}, not {_kind(value)}")
    value = value.strip()
    if not value:
        raise PayloadError(path, "must not be empty (leave the field out instead)")
    if len(value) > limit:
        raise PayloadError(path, f"is {len(value)} characters long; at most {limit} are allowed")
    return value


def _api_str(item: Mapping[str, object], name: str, path: str, *, limit: int) -> str | None:
    """An optional string field; JSON null counts as absent."""
    value = item.get(name)
    if value is None:
        return None
    return _checked_name(value, _at(path, name), limit=limit)


def _api_severity(value: object, path: str) -> str:
    if value is None:
        return "error"
    if not isinstance(value, str):
        raise PayloadError(path, f"must be a string, not {_kind(value)}")
    severity = severity_name(value)
    if severity is None:
        raise PayloadError(path, f"{_shown(value)} is not one of {', '.join(SEVERITIES)}")
    return severity


def _api_groups(value: object, path: str) -> tuple[str, ...] | None:
    """An array of names, or one string; the string is split on commas like a label."""
    if value is None:
        return None
    if isinstance(value, str):
        names = [_checked_name(part, path, limit=MAX_NAME) for part in value.split(",")]
    elif isinstance(value, list):
        names = [_checked_name(v, _item(path, i), limit=MAX_NAME) for i, v in enumerate(value)]
    else:
        raise PayloadError(path, f"must be a string or an array of strings, not {_kind(value)}")
    groups = tuple(dict.fromkeys(names))
    if not groups:
        raise PayloadError(path, "names no group or phone number (leave it out to let routing rules decide)")
    if len(groups) > MAX_ITEMS:
        raise PayloadError(path, f"names {len(groups)} recipients; at most {MAX_ITEMS} are allowed")
    return groups


def _api_tags(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PayloadError(path, f"must be an array of strings, not {_kind(value)}")
    tags = tuple(dict.fromkeys(_checked_name(v, _item(path, i), limit=MAX_NAME) for i, v in enumerate(value)))
    if len(tags) > MAX_ITEMS:
        raise PayloadError(path, f"holds {len(tags)} tags; at most {MAX_ITEMS} are allowed")
    return tags


# --- webhooks: Alertmanager and Grafana --------------------------------------------------


def _canonical_severity(value: str, what: str) -> str:
    severity = severity_name(value)
    if severity is None:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(SEVERITIES)}")
    return severity


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookOptions:
    """How the relay reads Alertmanager / Grafana alerts; set per endpoint by the operator.

    ``groups``, when set, overrides the groups label for every alert.
    Severity and groups names are checked here, so a bad configuration fails at start-up
    with a ValueError rather than on the first page.
    """

    send_resolved: bool = True
    severity_label: str = "severity"
    groups_label: str = "sms_groups"
    severity_map: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_SEVERITY_MAP))
    default_severity: str = "error"
    groups: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        mapping = {
            str(k).strip().lower(): _canonical_severity(v, f"severity_map[{k!r}]")
            for k, v in self.severity_map.items()
        }
        object.__setattr__(self, "severity_map", MappingProxyType(mapping))
        object.__setattr__(
            self, "default_severity", _canonical_severity(self.default_severity, "default_severity")
        )
        if self.groups is not None:
            names = tuple(dict.fromkeys(str(g).strip() for g in self.groups))
            if not names or "" in names:
                raise ValueError("groups must name at least one group or phone number, and no empty one")
            object.__setattr__(self, "groups", names)


_DEFAULT_OPTIONS: Final = WebhookOptions()


@dataclasses.dataclass(frozen=True, slots=True)
class _Flavor:
    name: str  # source prefix and first tag
    key_prefix: str
    grafana: bool  # Grafana's rules: labels may be missing; texts from errors and values


_ALERTMANAGER: Final = _Flavor("alertmanager", "am", grafana=False)
_GRAFANA: Final = _Flavor("grafana", "grafana", grafana=True)
_DETAIL_ANNOTATIONS: Final = ("summary", "description", "message")
#: the alerts Grafana sends when a rule could not be evaluated (label ``rulename``: the rule)
_DATASOURCE_ALERTS: Final = frozenset({"DatasourceError", "DatasourceNoData"})
#: Grafana's error id before its message, "[sse.dataQueryError] failed to execute query [A]: ..."
_GRAFANA_ERROR_ID = re.compile(r"^\[[a-z][\w-]*(?:\.[\w-]+)+\]\s*")
_MAX_VALUES_SHOWN: Final = 5
_GO_QUOTED = re.compile(r"\\([\\.+*?()|\[\]{}^$])")


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


def parse_alertmanager(data: object, *, options: WebhookOptions = _DEFAULT_OPTIONS) -> list[AlertSpec]:
    """Alertmanager's webhook body (version "4"; other versions are read the same way).

    One spec per alert, key ``am:{fingerprint}:{status}``. A resolved alert keeps the
    severity and groups of its firing one: the people who were paged are the ones who
    need the all-clear, and a routing rule on severity must send it to the same phones.
    With ``send_resolved=False`` resolved alerts are left out. Unknown top-level fields
    are ignored, for payloads of later versions.
    """
    return _parse_webhook(data, options, _ALERTMANAGER)


def parse_grafana(data: object, *, options: WebhookOptions = _DEFAULT_OPTIONS) -> list[AlertSpec]:
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
        raise PayloadError("body", f"must be a JSON object, not {_kind(data)}", status=400)
    if "alerts" not in data and any(k in data for k in ("ruleName", "ruleId", "evalMatches")):
        return _grafana_legacy(data, options)
    return _parse_webhook(data, options, _GRAFANA)


def _parse_webhook(data: object, options: WebhookOptions, flavor: _Flavor) -> list[AlertSpec]:
    if not isinstance(data, dict):
        raise PayloadError("body", f"must be a JSON object, not {_kind(data)}", status=400)
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        rule = "is required" if alerts is None else f"must be an array of alert objects, not {_kind(alerts)}"
        raise PayloadError("alerts", rule)
    receiver = data.get("receiver")
    if receiver is not None and not isinstance(receiver, str):
        raise PayloadError("receiver", f"must be a string, not {_kind(receiver)}")
    receiver = _GO_QUOTED.sub(r"\1", receiver or "").strip()
    source = _squash(f"{flavor.name}/{receiver}" if receiver else flavor.name, MAX_SOURCE)
    group_status = data.get("status")
    default_status: Status = "resolved" if group_status == "resolved" else "firing"
    specs = []
    for index, alert in enumerate(alerts):
        spec = _webhook_alert(alert, _item("alerts", index), options, flavor, source, default_status)
        if spec is not None:
            specs.append(spec)
    return specs


def _string_map(value: object, path: str) -> dict[str, str]:
    """Labels: an object of strings, or a PayloadError naming the bad entry."""
    if not isinstance(value, dict):
        rule = "is required" if value is None else f"must be an object of strings, not {_kind(value)}"
        raise PayloadError(path, rule)
    for name, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(_at(path, name), f"must be a string, not {_kind(item)}")
    return value


def _labels(value: object, path: str, flavor: _Flavor) -> dict[str, str]:
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
    return _string_map(value, path)


def _loose_map(value: object) -> dict[str, str]:
    """Annotations: only wording, so entries of the wrong type are skipped, not refused."""
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _webhook_alert(
    alert: object,
    path: str,
    options: WebhookOptions,
    flavor: _Flavor,
    source: str,
    default_status: Status,
) -> AlertSpec | None:
    if not isinstance(alert, dict):
        raise PayloadError(path, f"must be an alert object, not {_kind(alert)}")
    labels = _labels(alert.get("labels"), _at(path, "labels"), flavor)
    status = _alert_status(alert.get("status"), _at(path, "status"), default_status)
    if status == "resolved" and not options.send_resolved:
        return None
    fingerprint = _fingerprint(alert.get("fingerprint"), _at(path, "fingerprint"), labels)
    annotations = _loose_map(alert.get("annotations"))
    text = _webhook_text(alert, labels, annotations, options, flavor)
    starts_at = alert.get("startsAt")
    lifecycle = None
    if isinstance(starts_at, str) and starts_at.strip() and len(starts_at) <= MAX_FINGERPRINT:
        # Alertmanager gives an alert a new startsAt each time it starts firing again: the
        # pair names one firing, which re-sends of the group repeat byte for byte.
        lifecycle = f"{flavor.key_prefix}:{fingerprint}@{starts_at.strip()}"
    tag_labels = ("alertname", options.severity_label, "instance", "job")
    tags = [flavor.name, status]
    tags += [_squash(f"{k}={labels[k]}", MAX_NAME) for k in tag_labels if labels.get(k, "").strip()]
    return AlertSpec(
        text=_squash(text, MAX_TEXT),
        severity=_label_severity(labels.get(options.severity_label), options),
        key=f"{flavor.key_prefix}:{fingerprint}:{status}",
        groups=_label_groups(labels.get(options.groups_label), options),
        source=source,
        tags=tuple(dict.fromkeys(tags)),
        lifecycle=lifecycle,
        resolved=status == "resolved",
    )


def _webhook_text(
    alert: Mapping[str, object],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    options: WebhookOptions,
    flavor: _Flavor,
) -> str:
    """``name (instance): detail``, the first rule that gives a detail winning.

    Alertmanager: the ``summary``, ``description`` or ``message`` annotation, else the
    other labels as ``key=value``. Grafana (see :func:`parse_grafana`) puts two rules
    first, because a rule that could not be evaluated still carries its summary (say
    "CPU above 90%"), which would then page a condition nobody measured:

    1. ``DatasourceError`` / ``DatasourceNoData``: ``DatasourceError (rule: High CPU):
       <the Error annotation>``, the rule's name from the ``rulename`` label;
    2. any other alert with an ``Error`` annotation: ``High CPU (web1): error: <it>``;
    3. the ``summary``, ``description`` or ``message`` annotation;
    4. the values: ``High CPU (web1): A=93.5 C=1``, never Grafana's ``[ var=... ]`` dump;
    5. the labels, as for Alertmanager.
    """
    name = labels.get("alertname", "").strip() or "Alert"
    instance = labels.get("instance", "").strip()
    detail = ""
    if flavor.grafana:
        error = _GRAFANA_ERROR_ID.sub("", annotations.get("Error", "").strip(), count=1)
        if name in _DATASOURCE_ALERTS:
            about = {"rule": labels.get("rulename", "").strip(), "instance": instance}
            which = ", ".join(f"{k}: {v}" for k, v in about.items() if v)
            return name + (f" ({which})" if which else "") + (f": {error}" if error else "")
        detail = f"error: {error}" if error else ""
    detail = detail or _first(annotations, _DETAIL_ANNOTATIONS)
    if not detail and flavor.grafana:
        detail = _grafana_values(alert)
    if not detail:
        hidden = {"alertname", "instance", options.severity_label, options.groups_label}
        detail = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in hidden and v.strip())
    return name + (f" ({instance})" if instance else "") + (f": {detail}" if detail else "")


def _alert_status(value: object, path: str, default: Status) -> Status:
    if value is None or value == "":
        return default
    if value == "firing":
        return "firing"
    if value == "resolved":
        return "resolved"
    raise PayloadError(path, f"must be 'firing' or 'resolved', not {_shown(value)}")


def _fingerprint(value: object, path: str, labels: Mapping[str, str]) -> str:
    if value is None or value == "":
        return labels_fingerprint(labels)
    if not isinstance(value, str):
        raise PayloadError(path, f"must be a string, not {_kind(value)}")
    if len(value) > MAX_FINGERPRINT or not value.isprintable() or " " in value:
        raise PayloadError(path, f"must be at most {MAX_FINGERPRINT} printable characters without spaces")
    return value


def _first(values: Mapping[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        text = values.get(name, "").strip()
        if text:
            return text
    return ""


def _grafana_values(alert: Mapping[str, object]) -> str:
    """``A=93.5 C=1``: ``values``, else parsed out of ``valueString``.

    ``values`` is null when a value is NaN or infinite (Go's JSON encoder refuses them,
    and Grafana then drops the whole map) or in bodies from before it existed;
    ``valueString`` is always there: ``[ var='A' labels={instance=web1} value=93.5 ], [
    var='C' labels={instance=web1} value=1 ]``, or ``[ var='B0' metric='Count' labels={}
    value=1 ]`` for a classic condition, ``[ metric='' labels={} value=14151.33 ]`` before
    Grafana 9. Each item gives ``var=value`` (the metric, or ``value``, when there is no
    var); its labels are the alert's own and already in the text. A ``valueString`` none
    of whose items can be read gives nothing: the labels speak instead of the raw dump.
    """
    values = alert.get("values")
    pairs: list[tuple[str, str]] = []
    if isinstance(values, dict):
        pairs = [(str(k), _number(v)) for k, v in values.items() if _is_number(v)]
    value_string = alert.get("valueString")
    if not pairs and isinstance(value_string, str):
        pairs = [
            (m["var"] or m["metric"] or "value", _value_token(m["value"]))
            for m in _VALUE_ITEM.finditer(value_string)
        ]
    return _pairs(pairs)


# One item of Grafana's valueString, as its extractEvalString writes it (Go's %v for the value).
_VALUE_ITEM = re.compile(
    r"\[ (?:var='(?P<var>[^']*)' )?(?:metric='(?P<metric>.*?)' )?labels=\{.*?\} value=(?P<value>\S+) \]"
)


def _value_token(token: str) -> str:
    """A value from ``valueString``: ``1.2345e+06``, ``NaN``, ``+Inf``, or ``null`` (no value)."""
    try:
        return format_number(float(token))
    except ValueError:
        return token[:20]


def _pairs(pairs: list[tuple[str, str]]) -> str:
    """``A=93.5 C=1``, at most _MAX_VALUES_SHOWN of them, then ``+N more``."""
    shown = [f"{name.strip() or 'value'}={value}" for name, value in pairs[:_MAX_VALUES_SHOWN]]
    rest = len(pairs) - _MAX_VALUES_SHOWN
    return " ".join(shown) + (f" +{rest} more" if rest > 0 else "")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SMALLEST_FIXED: Final = 1e-6  # below this, fixed notation is a run of zeros nobody counts
_LARGEST_FIXED: Final = 10**9


def format_number(value: int | float) -> str:
    """A measured value as a person reads it on a phone: ``93.5``, ``14151``, ``0.001235``.

    * Whole numbers as whole numbers: ``12`` and ``12.0`` are both ``12``.
    * Otherwise four significant digits, but the whole part is never rounded away:
      ``44.23943`` is ``44.24``, ``1.23456`` is ``1.235``, ``0.0123456`` is ``0.01235``,
      ``12345.678`` is ``12346``. Trailing zeros go (``2.50`` is ``2.5``).
    * No scientific notation from 10^-6 up to (not including) 10^9: ``1e-05`` is
      ``0.00001``, and ``14151.33`` (which ``%.4g`` printed as ``1.415e+04``) is ``14151``.
      Beyond those bounds fixed notation is a run of digits nobody counts right at 3 a.m.,
      so it is ``1.235e+09``, ``-2e+12``, ``1.5e-07`` (four significant digits, an exponent
      of at least two digits, as Go and C print it).
    * ``0`` and ``-0.0`` are ``0``; NaN and the infinities (which JSON cannot carry, but
      Grafana's ``valueString`` can) are ``NaN``, ``+Inf`` and ``-Inf``, as Grafana shows them.
    """
    if isinstance(value, int):
        if abs(value) < _LARGEST_FIXED:
            return str(value)
        return _scientific(f"{Decimal(value):.3e}")  # an int of any size: no float overflow
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    size = abs(value)
    if size >= _LARGEST_FIXED or size < _SMALLEST_FIXED:
        return _scientific(f"{value:.3e}")
    # the exponent after rounding to four digits: 999.96 counts as 1000, not 999
    exponent = int(f"{size:.3e}".partition("e")[2])
    text = f"{value:.{max(0, 3 - exponent)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if len(text.lstrip("-")) > 9 and "." not in text:  # 999999999.7 rounded up to 10^9
        return _scientific(f"{value:.3e}")
    return text


def _scientific(text: str) -> str:
    """``1.230e+9`` or ``1.230e+09`` to ``1.23e+09``: no trailing zeros, two exponent digits."""
    mantissa, _, exponent = text.partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    power = int(exponent)
    return f"{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"


def _number(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_number(value)
    return str(value)


def _label_severity(value: str | None, options: WebhookOptions) -> str:
    """The operator's map first, then our own names (so ``debug`` or ``crit`` just work)."""
    if value is None:
        return options.default_severity
    key = value.strip().lower()
    return options.severity_map.get(key) or SEVERITY_NAMES.get(key) or options.default_severity


def _label_groups(value: str | None, options: WebhookOptions) -> tuple[str, ...] | None:
    """Comma-separated names; empty or over-long ones are dropped rather than losing the page."""
    if options.groups is not None:
        return options.groups
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")]
    groups = tuple(dict.fromkeys(n for n in names if n and len(n) <= MAX_NAME))[:MAX_ITEMS]
    return groups or None


def _squash(text: str, limit: int) -> str:
    """:func:`clean_text` (escapes, control and bidirectional characters out: the rule every
    door shares), whitespace runs to one space (templates love newlines; SMS pays for them),
    then cut. Cleaning before cutting means the limit counts what the phone shows.

    The cut marker follows the text's encoding, so a GSM-7 text is not turned into a
    UCS-2 one (three times the segments) by a "…".
    """
    text = " ".join(clean_text(text).split())
    if len(text) <= limit:
        return text
    marker = ellipsis_for(encoding_of(text))
    return text[: limit - len(marker)].rstrip() + marker


# --- Grafana legacy alerting ---------------------------------------------------------------

_LEGACY_STATES: Final = ("alerting", "ok", "no_data", "paused", "pending")


def _grafana_legacy(data: Mapping[str, object], options: WebhookOptions) -> list[AlertSpec]:
    """Grafana < 8 (and 8.x with legacy alerting): one rule, one state, no fingerprint.

    ``paused`` and ``pending`` give no spec (legacy Grafana does not page for them);
    ``no_data`` pages like ``alerting``, marked ``[NO DATA]``.
    """
    state_value = data.get("state")
    if not isinstance(state_value, str) or state_value.strip().lower() not in _LEGACY_STATES:
        rule = "is required" if state_value is None else f"{_shown(state_value)} is not a legacy alert state"
        raise PayloadError("state", f"{rule} (one of {', '.join(_LEGACY_STATES)})")
    state = state_value.strip().lower()
    if state in ("paused", "pending"):
        return []
    status: Status = "resolved" if state == "ok" else "firing"
    if status == "resolved" and not options.send_resolved:
        return []
    for name in ("ruleName", "title", "message"):
        if data.get(name) is not None and not isinstance(data.get(name), str):
            raise PayloadError(name, f"must be a string, not {_kind(data.get(name))}")
    rule_name = (
        str(data.get("ruleName") or "").strip() or str(data.get("title") or "").strip() or "Grafana alert"
    )
    rule_id = _legacy_rule_id(data.get("ruleId"), rule_name)
    labels = _string_map(data["tags"], "tags") if data.get("tags") is not None else {}
    detail = str(data.get("message") or "").strip() or _eval_matches(data.get("evalMatches"))
    text = rule_name + (f": {detail}" if detail else "")
    if state == "no_data":
        text = "[NO DATA] " + text
    tags = ["grafana", status, f"state={state}", _squash(f"alertname={rule_name}", MAX_NAME)]
    if labels.get(options.severity_label, "").strip():
        tags.append(_squash(f"{options.severity_label}={labels[options.severity_label]}", MAX_NAME))
    return [
        AlertSpec(
            text=_squash(text, MAX_TEXT),
            severity=_label_severity(labels.get(options.severity_label), options),
            key=f"grafana-legacy:{rule_id}:{state}",
            groups=_label_groups(labels.get(options.groups_label), options),
            source="grafana",
            tags=tuple(dict.fromkeys(tags)),
            resolved=status == "resolved",
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
    raise PayloadError("ruleId", f"must be a whole number, not {_shown(value)}")


def _eval_matches(value: object) -> str:
    """``Count=1 errors=3.5``: what the legacy rule saw, when it carries no message."""
    if not isinstance(value, list):
        return ""
    return _pairs(
        [
            (str(m.get("metric") or "value"), _number(m.get("value")))
            for m in value
            if isinstance(m, dict) and _is_number(m.get("value"))
        ]
    )
