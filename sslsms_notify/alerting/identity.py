"""What a queued alert is: its groups, severity and fingerprint, and the SMS it makes.

The intake asks this of every alert of a round, so both answers are cached: routes by
(source, severity, tags, named groups), fingerprints by what identifies the alert (its
key, its template or text, its source, severity and exception type). A text is rendered
only when nothing else identifies the alert, and formatted only for an alert's first and
latest occurrence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any

from ..gateway.clean import clean_text
from .alert import Alert, Severity, fingerprint_of
from .decisions import Hit, Policy, window_key
from .escalation import key_identity
from .formatting import format_parts
from .holds import Facts, short_id
from .messages import render
from .queued import (
    EXC_TYPE,
    GROUPS,
    HOST,
    KEY,
    LABELS,
    LIFECYCLE,
    RAW,
    RESOLVED,
    SEVERITY,
    SOURCE,
    TAGS,
    TEMPLATE,
    Queued,
)
from .routing import Router

_SEVERITIES = {int(s): s for s in Severity}
_NAMES = {int(s): s.name.lower() for s in Severity}
_NO_LABELS: Mapping[str, str] = MappingProxyType({})
#: (groups, severity as an int, fingerprint)
Identity = tuple[tuple[str, ...], int, str]
#: (seconds, phones): when and whom an alert escalates to
Escalate = tuple[float, tuple[str, ...]]


class Identifier:
    def __init__(self, router: Router, policy: Policy, host: str) -> None:
        self.router, self.policy, self.host = router, policy, host
        self._fingerprints: dict[Hashable, str] = {}
        self._routes: dict[Hashable, tuple[str, ...]] = {}
        self._escalations: dict[Hashable, Escalate | None] = {}

    def identify(self, first: Queued) -> Identity:
        """(groups, severity, fingerprint) of an alert, from its first occurrence.

        Raises ValueError for an alert whose text renders to nothing.
        """
        raw, number, key, chosen = first[RAW], first[SEVERITY], first[KEY], first[GROUPS]
        source, tags, template, exc_type = first[SOURCE], first[TAGS], first[TEMPLATE], first[EXC_TYPE]
        route_key = (source, number, tags, chosen)
        group_names = self._routes.get(route_key)
        if group_names is None:
            probe = Alert(
                text="-", severity=_SEVERITIES[number], source=source, tags=frozenset(tags), groups=chosen
            )
            group_names = self.router.group_names(probe)
            if len(self._routes) > 10_000:
                self._routes.clear()
            self._routes[route_key] = group_names
        if key or template is not None or type(raw) is str:
            basis_text = template if template is not None else raw
        else:
            basis_text = render_text(raw)  # a callable with no template: its text is its identity
        basis = (key, source, number, basis_text, exc_type)
        fingerprint = self._fingerprints.get(basis)
        if fingerprint is None:
            fingerprint = fingerprint_of(key, source, _SEVERITIES[number], basis_text or "", exc_type)
            if len(self._fingerprints) > 50_000:
                self._fingerprints.clear()
            self._fingerprints[basis] = fingerprint
        return group_names, number, fingerprint

    def hits(self, identity: Identity, first: Queued, last: Queued, count: int, index: int) -> list[Hit]:
        """The alert for each group it goes to, with its first and latest SMS text.

        Raises ValueError for an alert whose text renders to nothing.
        """
        group_names, number, fingerprint = identity
        raw, source, resolved = first[RAW], first[SOURCE], first[RESOLVED]
        level = _SEVERITIES[number]
        host = self.host if first[HOST] is None else first[HOST]
        segments = self.policy.max_segments
        body = render_text(raw)
        first_text = format_parts(level, host, source, body, segments, resolved=resolved)
        lifecycle = first[LIFECYCLE]
        labels = first[LABELS]
        facts = Facts(
            body,
            source,
            first[KEY] or "",
            _NAMES[number],
            number,
            first[TAGS],
            dict(labels) if labels else _NO_LABELS,
            # a webhook alert is one kind from firing to resolved, whatever its startsAt
            short_id(lifecycle.rpartition("@")[0]) if lifecycle else fingerprint[:12],
            short_id(lifecycle, "resolved" if resolved else "firing") if lifecycle else None,
            resolved,
        )
        last_text = first_text
        last_raw = last[RAW]
        if last_raw is not raw and last_raw != raw:
            with contextlib.suppress(ValueError):
                last_text = format_parts(
                    level, host, source, render_text(last_raw), segments, resolved=resolved
                )
        alert_id, escalate = self._escalation(first, fingerprint)
        return [
            Hit(
                window_key(group, level, fingerprint),
                group,
                self.router.numbers(group),
                count,
                first_text,
                last_text,
                index,
                lifecycle,
                resolved,
                alert_id,
                escalate,
                facts,
            )
            for group in group_names
        ]

    def _escalation(self, first: Queued, fingerprint: str) -> tuple[str, Escalate | None]:
        """(the alert's identity for escalation, (seconds, phones) if a route escalates it).

        ("", None) when no route escalates: nothing to look up in the store.
        """
        if not self.router.escalates:
            return "", None
        number, key, source, tags = first[SEVERITY], first[KEY], first[SOURCE], first[TAGS]
        lifecycle = first[LIFECYCLE]
        alert_id = lifecycle or (key_identity(key) if key else f"fp:{fingerprint}")
        route_key = (source, number, tags)
        if route_key not in self._escalations:
            probe = Alert(text="-", severity=_SEVERITIES[number], source=source, tags=frozenset(tags))
            if len(self._escalations) > 10_000:
                self._escalations.clear()
            self._escalations[route_key] = self.router.escalation(probe)
        return alert_id, self._escalations[route_key]


def render_text(raw: Any) -> str:
    """The text of a queued alert, cleaned (see :func:`~sslsms_notify.gateway.clean.clean_text`)."""
    try:
        text = render(raw)
    except Exception as exc:  # a broken __str__ in a log argument must not stop the thread
        text = f"(message could not be formatted: {type(exc).__name__})"
    cleaned = clean_text(text)
    if not cleaned or cleaned.isspace():
        raise ValueError(f"text={text[:40]!r}: nothing left to send once control characters are removed")
    return cleaned
