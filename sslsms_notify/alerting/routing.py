"""Recipient groups and the rules that pick them for an alert."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..durations import Duration
from ..gateway.msisdn import is_valid_msisdn, normalize_msisdn
from ..quiet import QuietHours, quiet_of
from .alert import Alert, Severity

DEFAULT_GROUP = "default"
#: what a route's ``escalate_after`` may be: a second to a week
ESCALATE_AFTER = Duration(1, 7 * 86400)


@dataclass(frozen=True, slots=True)
class Route:
    """Send alerts that match every given condition to ``groups``.

    ``min_severity``: at or above; ``sources``: logger/source name prefixes
    (``"app.db"`` matches ``"app.db.pool"``); ``tags``: all must be present.
    ``stop``: later routes are not consulted when this one matches.
    ``escalate_after`` (seconds) and ``escalate_to`` (groups): an alert this route
    matches that nobody acknowledges or resolves within that time pages those groups
    once, ``[ESCALATED 15m] ...``; its first SMS ends with its ack code.
    """

    groups: tuple[str, ...]
    min_severity: Severity | None = None
    sources: tuple[str, ...] = ()
    tags: frozenset[str] = field(default_factory=frozenset)
    stop: bool = False
    escalate_after: float | None = None
    escalate_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.escalate_after is None) != (not self.escalate_to):
            raise ValueError(
                "route: escalate_after and escalate_to go together (a time and the groups to page)"
            )

    @classmethod
    def parse(cls, spec: Mapping[str, object]) -> Route:
        """From config, e.g. ``{"groups": ["oncall"], "min_severity": "critical"}``."""
        known = {"groups", "min_severity", "sources", "tags", "stop", "escalate_after", "escalate_to"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"route has unknown field(s): {', '.join(sorted(unknown))}")
        groups = _as_tuple(spec.get("groups"), "route.groups")
        if not groups:
            raise ValueError("route.groups must name at least one group")
        severity = spec.get("min_severity")
        return cls(
            groups=groups,
            min_severity=Severity.parse(severity) if severity is not None else None,  # type: ignore[arg-type]
            sources=_as_tuple(spec.get("sources"), "route.sources"),
            tags=frozenset(_as_tuple(spec.get("tags"), "route.tags")),
            stop=bool(spec.get("stop", False)),
            escalate_after=ESCALATE_AFTER.check("route.escalate_after", spec["escalate_after"])
            if spec.get("escalate_after") is not None
            else None,
            escalate_to=_as_tuple(spec.get("escalate_to"), "route.escalate_to"),
        )

    def matches(self, alert: Alert) -> bool:
        if self.min_severity is not None and alert.severity < self.min_severity:
            return False
        if self.sources and not any(source_matches(alert.source, p) for p in self.sources):
            return False
        return self.tags <= alert.tags


def source_matches(source: str, prefix: str) -> bool:
    """``"app.db"`` matches ``app.db`` and ``app.db.pool``, not ``app.dbx``; ``"*"`` matches all."""
    return source == prefix or source.startswith(prefix + ".") or prefix in ("", "*")


def _as_tuple(value: object, field_name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, Iterable):
        return tuple(str(v) for v in value)
    raise ValueError(f"{field_name} must be a list of names")


class Router:
    """Resolves an alert to ``{group: [numbers]}``; a number typed directly is its own group.

    An alert that names its groups goes there. Otherwise the routes decide: every
    matching route adds its groups. With routes configured, an alert that matches
    none goes **nowhere** (a route's ``min_severity`` is a filter, as operators
    read it); add a route with no conditions to catch the rest, or pass
    ``default_groups``. With no routes at all, alerts go to the ``default`` group
    (else the first group).

    A group is a list of numbers, or a table as the configuration file writes it,
    ``{"numbers": [...], "quiet": "22:00-08:00", "timezone": "Asia/Dhaka",
    "quiet_min_severity": "critical"}`` (see :mod:`sslsms_notify.quiet`); ``quiet``
    maps each group that has quiet hours to them.
    """

    def __init__(
        self,
        groups: Mapping[str, Sequence[str] | Mapping[str, Any]],
        routes: Sequence[Route] = (),
        default_groups: Sequence[str] | None = None,
    ) -> None:
        self.groups: dict[str, tuple[str, ...]] = {}
        #: group -> its quiet hours (only groups that have some)
        self.quiet: dict[str, QuietHours] = {}
        for name, numbers in groups.items():
            if isinstance(numbers, Mapping):
                quiet = quiet_of(f"groups.{name}", numbers)
                numbers = numbers.get("numbers") or []
            else:
                quiet = getattr(numbers, "quiet", None)  # a Group read from a configuration file
            if quiet is not None:
                self.quiet[name] = quiet
            if isinstance(numbers, str):
                numbers = [n for n in numbers.split(",") if n.strip()]
            normalized = [normalize_msisdn(n, field=f"groups.{name}[{i}]") for i, n in enumerate(numbers)]
            self.groups[name] = tuple(dict.fromkeys(normalized))  # keep order, drop repeats
        self.routes = tuple(routes)
        if default_groups is None:
            if self.routes:
                default_groups = []  # the routes decide; unmatched alerts are "unrouted"
            else:
                default_groups = [DEFAULT_GROUP] if DEFAULT_GROUP in self.groups else list(self.groups)[:1]
        self.default_groups = tuple(default_groups)
        for route in self.routes:
            self.check_names(route.groups, "route")
            self.check_names(route.escalate_to, "route.escalate_to")
        self.check_names(self.default_groups, "default_groups")
        #: whether any route escalates (else alerts carry no ack code, and nothing is looked up)
        self.escalates = any(route.escalate_after is not None for route in self.routes)

    def check_names(self, names: Iterable[str], where: str) -> None:
        for name in names:
            if name not in self.groups and not is_valid_msisdn(name):
                known = ", ".join(sorted(self.groups)) or "none defined"
                raise ValueError(f"{where} names unknown group {name!r} (groups: {known})")

    def group_names(self, alert: Alert) -> tuple[str, ...]:
        if alert.groups:
            self.check_names(alert.groups, "alert.groups")
            return tuple(dict.fromkeys(alert.groups))
        chosen: list[str] = []
        for route in self.routes:
            if route.matches(alert):
                chosen.extend(route.groups)
                if route.stop:
                    break
        return tuple(dict.fromkeys(chosen or self.default_groups))

    def escalation(self, alert: Alert) -> tuple[float, tuple[str, ...]] | None:
        """(seconds, phones) of the first matching route that escalates, or None.

        Routes are matched as for routing, also when the alert names its own groups (a
        webhook's groups label): escalation follows the alert, wherever it went.
        """
        for route in self.routes:
            if route.escalate_after is not None and route.matches(alert):
                phones = tuple(dict.fromkeys(n for g in route.escalate_to for n in self.numbers(g)))
                return route.escalate_after, phones
            if route.stop and route.matches(alert):
                return None
        return None

    def numbers(self, group: str) -> tuple[str, ...]:
        if group in self.groups:
            return self.groups[group]
        return (normalize_msisdn(group),)
