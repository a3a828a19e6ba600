"""The relay's own settings: where it listens, who may post, how webhooks map to alerts.

Every field is declared in :data:`sslsms_notify.config.RELAY_SETTINGS` (its TOML key in
``[relay]``, its environment variable, its default, its doc and its rule), the same
registry as every other setting; this module is the record they fill. Values come from
a TOML ``[relay]`` section and the environment (``SSLSMS_RELAY_TOKENS``,
comma-separated; ``SSLSMS_RELAY_LISTEN``), the environment winning, and are checked
where they enter: the field, the value and the rule in one line (never a token's value).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..config.registry import RELAY_BY_NAME, RELAY_SETTINGS
from ..config.rules import DEFAULT_LISTEN, MIN_TOKEN_LENGTH
from ..config.sources import env_values
from ..validation import LOG_LEVELS
from .payloads import WebhookOptions

__all__ = ["DEFAULT_LISTEN", "LOG_LEVELS", "MIN_TOKEN_LENGTH", "RelaySettings"]

_DECLARED = RELAY_BY_NAME


@dataclass(frozen=True)
class RelaySettings:
    """The ``[relay]`` section of the config file (``SSLSMS_RELAY_*`` variables win).

    Each field's meaning, rule, default and variable are declared in
    :data:`sslsms_notify.config.RELAY_SETTINGS`; the relay guide's table shows them.
    Build it with :meth:`load`, or keywords followed by :meth:`checked`.
    """

    listen: str = _DECLARED["listen"].default
    tokens: tuple[str, ...] = field(default=_DECLARED["tokens"].default, repr=False)
    max_body: int = _DECLARED["max_body"].default
    shutdown_timeout: float = _DECLARED["shutdown_timeout"].default
    send_resolved: bool = _DECLARED["send_resolved"].default
    severity_label: str = _DECLARED["severity_label"].default
    groups_label: str = _DECLARED["groups_label"].default
    default_severity: str = _DECLARED["default_severity"].default
    allow_numbers: bool = _DECLARED["allow_numbers"].default
    log_level: str = _DECLARED["log_level"].default
    max_connections: int | str = _DECLARED["max_connections"].default
    idle_timeout: float = _DECLARED["idle_timeout"].default
    watchdog_alertname: str = _DECLARED["watchdog_alertname"].default
    watchdog_timeout: float = _DECLARED["watchdog_timeout"].default
    read_timeout: float = _DECLARED["read_timeout"].default

    def __repr__(self) -> str:
        return f"RelaySettings(listen={self.listen!r}, tokens=<{len(self.tokens)} hidden>)"

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"

    def webhook_options(self) -> WebhookOptions:
        return WebhookOptions(
            send_resolved=self.send_resolved,
            severity_label=self.severity_label,
            groups_label=self.groups_label,
            default_severity=self.default_severity,
        )

    @classmethod
    def load(
        cls, section: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> RelaySettings:
        """From a TOML ``[relay]`` table, then the environment (each declared variable
        that is not blank); every value checked by its declaration."""
        table = dict(section or {})
        for key in table:
            if key not in _DECLARED:
                raise ValueError(f"[relay] {key}: unknown key (known: {', '.join(sorted(_DECLARED))})")
        from_env = env_values(RELAY_SETTINGS, environ)
        # A file value the environment replaces is never used, so it is not checked either:
        # the example's placeholder token under SSLSMS_RELAY_TOKENS must not stop the relay.
        values = {
            d.name: d.check(d.label or d.name, table[d.name])
            for d in RELAY_SETTINGS
            if d.name in table and d.name not in from_env
        }
        values.update(from_env)
        return cls(**values)

    @staticmethod
    def shadowed(section: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None) -> list[str]:
        """``"SSLSMS_RELAY_TOKENS shadows [relay] tokens"`` for each file key the environment replaces."""
        from_env = env_values(RELAY_SETTINGS, environ)
        return [
            f"{_DECLARED[name].env} shadows [relay] {name}" for name in (section or {}) if name in from_env
        ]

    def describe(self) -> dict[str, Any]:
        """Every field, for ``config check``; the tokens only counted."""
        described: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        described["tokens"] = f"<{len(self.tokens)} hidden>"
        return described

    def checked(self) -> RelaySettings:
        """Every field checked by its declaration (and normalised), e.g. after ``replace()``."""
        checked = {s.name: s.check(s.label or s.name, getattr(self, s.name)) for s in RELAY_SETTINGS}
        return replace(self, **checked)


# The declarations and the fields must agree: a new setting is a declaration AND a field.
if tuple(f.name for f in fields(RelaySettings)) != tuple(_DECLARED):
    raise RuntimeError("sslsms_notify.relay.settings: RELAY_SETTINGS and the RelaySettings fields differ")
