"""Severity names and the short forms people type for them: the one table every door reads.

``send --severity``, the relay API's ``severity`` field, a webhook label our own names
match, ``[relay] default_severity``, routes' ``min_severity`` and
:meth:`~sslsms_notify.alerting.alert.Severity.parse` all accept these names, in any case.

Not to be confused with :data:`sslsms_notify.relay.payloads.DEFAULT_SEVERITY_MAP`: that
maps the *label values* of Alertmanager and Grafana alerts (``page``, ``p1``, ``high``
...) to our severities, an operator may replace it, and it is read before this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

#: our severities, lowest first (the order of :class:`~sslsms_notify.alerting.alert.Severity`)
SEVERITIES: Final = ("debug", "info", "warning", "error", "critical")

#: short forms and the severity each stands for
SEVERITY_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {"warn": "warning", "err": "error", "crit": "critical", "fatal": "critical"}
)

#: every accepted name, lower case (severities and aliases) -> its severity
SEVERITY_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {name: name for name in SEVERITIES} | dict(SEVERITY_ALIASES)
)


def severity_name(text: str) -> str | None:
    """The severity ``text`` names (any case, spaces around ignored), or None."""
    return SEVERITY_NAMES.get(text.strip().lower())
