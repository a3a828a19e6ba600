"""Rules for settings that are more than one plain value: numbers, groups, routes, and the
relay's address and tokens.

Each is a :class:`~sslsms_notify.validation.Rule`: ``rule`` is the sentence the reference
prints, ``check(label, value, text=...)`` the normalised value or a ValueError naming
``label``. The plain ones (numbers, text, choices, flags) are in :mod:`sslsms_notify.validation`.
Nothing here imports the pipeline: a route is checked here, built by
:meth:`~sslsms_notify.alerting.routing.Route.parse`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..durations import Duration
from ..gateway.client import DEFAULT_BASE_URL, MAX_SID_LENGTH, MAX_TOKEN_LENGTH
from ..gateway.msisdn import normalize_msisdn
from ..quiet import Group, quiet_of
from ..severity import SEVERITIES, severity_name
from ..validation import Flag, HttpURL, InvalidValue, Text, Whole, fail

_NUMBER_CHARS = frozenset("+-.() ")


def looks_like_number(target: str) -> bool:
    """A target made only of digits, ``+``, spaces, dashes, dots and parentheses is a
    phone number; anything else is a group name (so a typo in a number gets the number
    rule, not "no such group")."""
    stripped = target.strip()
    return (
        bool(stripped)
        and any(c.isdigit() for c in stripped)
        and all(c.isdigit() or c in _NUMBER_CHARS for c in stripped)
    )


@dataclass(frozen=True)
class Numbers:
    """Phone numbers: a list, or one string of comma-separated numbers."""

    rule: str = "must be a list of phone numbers (or one string of comma-separated numbers)"

    def check(self, label: str, value: Any, *, text: bool = False) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [n for n in value.split(",") if n.strip()]
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            fail(label, value, self.rule)
        numbers = [normalize_msisdn(n, field=f"{label}[{i}]") for i, n in enumerate(value)]
        return tuple(dict.fromkeys(numbers))


@dataclass(frozen=True)
class Groups:
    """``{name: numbers}``; a name must not look like a phone number. A group given as a
    table (``[groups.managers]``: ``numbers``, ``quiet``, ``timezone``,
    ``quiet_min_severity``) becomes a :class:`~sslsms_notify.quiet.Group`: its numbers,
    with its quiet hours."""

    rule: str = (
        'must be a table of group names to lists of numbers, e.g. oncall = ["01712345678"], '
        'or to tables: [groups.managers] numbers = [...], quiet = "22:00-08:00", '
        'timezone = "Asia/Dhaka", quiet_min_severity = "critical"'
    )

    def check(self, label: str, value: Any, *, text: bool = False) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, Mapping):
            fail(label, value, self.rule)
        groups: dict[str, tuple[str, ...]] = {}
        for name, numbers in value.items():
            where = f"{label}.{name}"
            if not isinstance(name, str) or not name.strip() or "," in name:
                fail(label, name, "group names must be non-empty and hold no comma")
            if looks_like_number(name):
                fail(where, name, "a group name must not look like a phone number (use letters, e.g. oncall)")
            if isinstance(numbers, Mapping):
                quiet = quiet_of(where, numbers)
                if "numbers" not in numbers:
                    raise InvalidValue(where, None, 'a group table needs numbers = ["01712345678", ...]')
                listed = Numbers().check(f"{where}.numbers", numbers["numbers"])
                if not listed:
                    fail(f"{where}.numbers", numbers["numbers"], "must list at least one phone number")
                groups[name.strip()] = Group(listed, quiet)
                continue
            if not isinstance(numbers, list | tuple | str):
                fail(where, numbers, 'must be a list of phone numbers, e.g. ["01712345678"]')
            normalized = Numbers().check(where, numbers)
            if not normalized:
                fail(where, numbers, "must list at least one phone number")
            if isinstance(numbers, Group):  # checked again (Settings.validated()): keeps its quiet hours
                normalized = Group(normalized, numbers.quiet)
            groups[name.strip()] = normalized
        return groups


ROUTE_KEYS = ("groups", "min_severity", "sources", "tags", "stop", "escalate_after", "escalate_to")
#: a route's ``escalate_after``: a second to a week
ESCALATE_AFTER = Duration(1, 7 * 86400)


@dataclass(frozen=True)
class Routes:
    """``[[routes]]``: which groups get which alerts (see :class:`~.alerting.routing.Route`)."""

    rule: str = (
        'must be a list of tables like {groups = ["oncall"], min_severity = "error", '
        'sources = ["app.db"], tags = ["db"], stop = false, escalate_after = "15m", '
        'escalate_to = ["managers"]}'
    )

    def check(self, label: str, value: Any, *, text: bool = False) -> tuple[dict[str, Any], ...]:
        if not isinstance(value, list | tuple):
            fail(label, value, self.rule)
        return tuple(self._route(f"{label}[{index}]", spec) for index, spec in enumerate(value))

    def _route(self, where: str, spec: Any) -> dict[str, Any]:
        if not isinstance(spec, Mapping):
            fail(where, spec, self.rule)
        unknown = sorted(str(k) for k in set(spec) - set(ROUTE_KEYS))
        if unknown:
            known = ", ".join(sorted(ROUTE_KEYS))
            raise InvalidValue(where, None, f"unknown key(s) {', '.join(unknown)} (known: {known})")
        for key in ("groups", "sources", "tags", "escalate_to"):
            names = spec.get(key)
            if names is not None and not (
                isinstance(names, str)
                or (isinstance(names, list | tuple) and all(isinstance(n, str) for n in names))
            ):
                fail(f"{where}.{key}", names, "must be a list of names")
        if "stop" in spec:
            Flag().check(f"{where}.stop", spec["stop"])
        if spec.get("escalate_after") is not None:
            ESCALATE_AFTER.check(f"{where}.escalate_after", spec["escalate_after"])
        if (spec.get("escalate_after") is None) != (not spec.get("escalate_to")):
            raise InvalidValue(
                where, None, "escalate_after and escalate_to go together (a time, and the groups to page)"
            )
        severity = spec.get("min_severity")
        if severity is not None and not isinstance(severity, str | int):
            fail(f"{where}.min_severity", severity, "must be a severity name like error or critical")
        groups = spec.get("groups") or ()
        if not ([g for g in groups.split(",") if g.strip()] if isinstance(groups, str) else groups):
            raise InvalidValue(where, None, "route.groups must name at least one group")
        # as Severity.parse reads it: a name, or a logging level number (the nearest below)
        if isinstance(severity, bool) or (isinstance(severity, str) and severity_name(severity) is None):
            raise InvalidValue(where, None, f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        return dict(spec)


# -- the relay's ----------------------------------------------------------------------
DEFAULT_LISTEN = "127.0.0.1:8026"
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Listen:
    """``HOST:PORT``; port 0 picks any free port."""

    rule: str = f"must be HOST:PORT, e.g. {DEFAULT_LISTEN}, with a port from 0 (any free port) to 65535"

    def check(self, label: str, value: Any, *, text: bool = False) -> str:
        if not isinstance(value, str) or ":" not in value:
            fail(label, value, f"must be HOST:PORT, e.g. {DEFAULT_LISTEN}")
        port = value.rsplit(":", 1)[1]
        if not port.isdigit() or not 0 <= int(port) < 65536:
            fail(label, value, "the port must be a number from 0 (any free port) to 65535")
        return value


#: words only an example's placeholder token holds
_PLACEHOLDERS = ("change-me", "changeme", "replace-me", "your-token", "example-token")


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens: a list, or one string of comma-separated tokens; never shown."""

    rule: str = (
        "must be a list of strings (or SSLSMS_RELAY_TOKENS, comma-separated), "
        f"each at least {MIN_TOKEN_LENGTH} characters without spaces"
    )

    def check(self, label: str, value: Any, *, text: bool = False) -> tuple[str, ...]:
        if isinstance(value, str):
            value = tuple(t.strip() for t in value.split(",") if t.strip())
        if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
            raise InvalidValue(
                label, None, "must be a list of strings (or SSLSMS_RELAY_TOKENS, comma-separated)"
            )
        for position, token in enumerate(value):
            if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
                raise InvalidValue(
                    f"{label}[{position}]",
                    None,
                    f"must be at least {MIN_TOKEN_LENGTH} characters without spaces",
                )
            if any(word in token.lower() for word in _PLACEHOLDERS):
                # the example's placeholder, copied as is: anyone who read the example knows it
                raise InvalidValue(
                    f"{label}[{position}]",
                    None,
                    "is a placeholder from an example; use a random one, e.g. $(openssl rand -hex 24)",
                )
        return tuple(value)


@dataclass(frozen=True)
class LabelName:
    """The name of an alert label (kept as written)."""

    rule: str = "must be a label name"

    def check(self, label: str, value: Any, *, text: bool = False) -> str:
        if not isinstance(value, str) or not value.strip():
            fail(label, value, self.rule)
        return value


@dataclass(frozen=True)
class NotifyURLs:
    """apprise URLs (``mailto://...``, ``tgram://...``): a list, or one string of URLs
    separated by spaces. Only their form is checked here; apprise reads them when the
    pipeline starts (and refuses one it does not know)."""

    rule: str = 'must be a list of apprise URLs, e.g. ["mailto://user:pass@example.com", "tgram://bot/chat"]'

    def check(self, label: str, value: Any, *, text: bool = False) -> tuple[str, ...]:
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list | tuple):
            fail(label, value, self.rule, secret=True)
        urls = []
        for index, url in enumerate(value):
            if not isinstance(url, str) or "://" not in url or any(c.isspace() for c in url.strip()):
                fail(f"{label}[{index}]", url, self.rule)
            urls.append(url.strip())
        return tuple(dict.fromkeys(urls))


@dataclass(frozen=True)
class Account:
    """A second gateway account: ``{sid = "...", api_token = "...", base_url = "..."}``
    (``token`` for ``api_token`` too; ``base_url`` defaults to the gateway's)."""

    default_base_url: str = DEFAULT_BASE_URL
    rule: str = 'must be a table like {sid = "MYSID", api_token = "...", base_url = "https://..."}'

    def check(self, label: str, value: Any, *, text: bool = False) -> dict[str, str]:
        if not isinstance(value, Mapping):
            fail(label, value, self.rule, secret=True)
        known = ("sid", "api_token", "token", "base_url")
        unknown = sorted(str(k) for k in value if k not in known)
        if unknown:
            raise InvalidValue(
                label, None, f"unknown key(s) {', '.join(unknown)} (known: sid, api_token, base_url)"
            )
        sid = Text("a sender id", min_length=1, max_length=MAX_SID_LENGTH, no_spaces=True)
        token = Text("a token", min_length=1, max_length=MAX_TOKEN_LENGTH, no_spaces=True, secret=True)
        account = {
            "sid": sid.check(f"{label}.sid", value.get("sid")),
            "api_token": token.check(f"{label}.api_token", value.get("api_token", value.get("token"))),
            "base_url": HttpURL().check(f"{label}.base_url", value.get("base_url") or self.default_base_url),
        }
        return account


@dataclass(frozen=True)
class Connections:
    """``"auto"`` (any case) or a whole number."""

    maximum: int = 1_000_000

    @property
    def rule(self) -> str:
        return f'must be "auto" (from the file-descriptor limit) or a whole number from 1 to {self.maximum}'

    def check(self, label: str, value: Any, *, text: bool = False) -> int | str:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if text and isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            fail(label, value, 'must be "auto" (from the file-descriptor limit) or a whole number')
        return Whole(1, self.maximum).check(label, value)
