"""How the relay reads Alertmanager and Grafana alerts: the operator's options, the two flavours."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ...severity import SEVERITIES, SEVERITY_NAMES, severity_name
from .common import MAX_ITEMS, MAX_NAME, PayloadError, field_at, kind_of

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


def canonical_severity(value: str, what: str) -> str:
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
            str(k).strip().lower(): canonical_severity(v, f"severity_map[{k!r}]")
            for k, v in self.severity_map.items()
        }
        object.__setattr__(self, "severity_map", MappingProxyType(mapping))
        object.__setattr__(
            self, "default_severity", canonical_severity(self.default_severity, "default_severity")
        )
        if self.groups is not None:
            names = tuple(dict.fromkeys(str(g).strip() for g in self.groups))
            if not names or "" in names:
                raise ValueError("groups must name at least one group or phone number, and no empty one")
            object.__setattr__(self, "groups", names)


DEFAULT_OPTIONS: Final = WebhookOptions()


@dataclasses.dataclass(frozen=True, slots=True)
class Flavor:
    name: str  # source prefix and first tag
    key_prefix: str
    grafana: bool  # Grafana's rules: labels may be missing; texts from errors and values


ALERTMANAGER: Final = Flavor("alertmanager", "am", grafana=False)
GRAFANA: Final = Flavor("grafana", "grafana", grafana=True)
DETAIL_ANNOTATIONS: Final = ("summary", "description", "message")
#: the alerts Grafana sends when a rule could not be evaluated (label ``rulename``: the rule)
DATASOURCE_ALERTS: Final = frozenset({"DatasourceError", "DatasourceNoData"})
#: Grafana's error id before its message, "[sse.dataQueryError] failed to execute query [A]: ..."
GRAFANA_ERROR_ID = re.compile(r"^\[[a-z][\w-]*(?:\.[\w-]+)+\]\s*")
MAX_VALUES_SHOWN: Final = 5
_GO_QUOTED = re.compile(r"\\([\\.+*?()|\[\]{}^$])")


def string_map(value: object, path: str) -> dict[str, str]:
    """Labels: an object of strings, or a PayloadError naming the bad entry."""
    if not isinstance(value, dict):
        rule = "is required" if value is None else f"must be an object of strings, not {kind_of(value)}"
        raise PayloadError(path, rule)
    for name, item in value.items():
        if not isinstance(item, str):
            raise PayloadError(field_at(path, name), f"must be a string, not {kind_of(item)}")
    return value


def label_severity(value: str | None, options: WebhookOptions) -> str:
    """The operator's map first, then our own names (so ``debug`` or ``crit`` just work)."""
    if value is None:
        return options.default_severity
    key = value.strip().lower()
    return options.severity_map.get(key) or SEVERITY_NAMES.get(key) or options.default_severity


def label_groups(value: str | None, options: WebhookOptions) -> tuple[str, ...] | None:
    """Comma-separated names; empty or over-long ones are dropped rather than losing the page."""
    if options.groups is not None:
        return options.groups
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")]
    groups = tuple(dict.fromkeys(n for n in names if n and len(n) <= MAX_NAME))[:MAX_ITEMS]
    return groups or None
