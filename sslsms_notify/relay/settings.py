"""The relay's own settings: where it listens, who may post, how webhooks map to alerts.

From a TOML ``[relay]`` section and the environment (``SSLSMS_RELAY_TOKENS``,
comma-separated; ``SSLSMS_RELAY_LISTEN``), the environment winning. Every value is
checked where it enters: the field, the value and the rule in one line (never a
token's value).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..severity import SEVERITIES
from ..validation import LOG_LEVELS, integer, positive
from .payloads import WebhookOptions

DEFAULT_LISTEN = "127.0.0.1:8026"
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class RelaySettings:
    """The ``[relay]`` section of the config file (``SSLSMS_RELAY_*`` variables win).

    Attributes:
        listen: HOST:PORT to listen on; loopback by default (port 0: any free port).
        tokens: bearer tokens producers may present, each at least 16 characters
            without spaces; the relay refuses to start without one.
        max_body: the largest request body accepted, in bytes (1024 to 64 MiB);
            larger bodies are refused with 413 while they are read.
        shutdown_timeout: seconds SIGTERM or SIGINT may take: half for the requests
            under way, half for closing the pipeline (at most 600).
        send_resolved: resolved Alertmanager and Grafana alerts become
            ``[RESOLVED] ...`` SMS (false: they are ignored).
        severity_label: the alert label read as the severity (``critical``, ``page``,
            ``p1`` ... ``info``, ``low``, ``none``).
        groups_label: the alert label naming recipient groups, comma-separated;
            without it (or if it names no group the relay knows) the routes decide.
        default_severity: the severity of an alert whose severity label is missing
            or not understood.
        allow_numbers: whether producers may name phone numbers directly (in
            ``groups`` or the groups label); by default only configured groups, so a
            relay token cannot send SMS to any number.
        log_level: what the relay writes to stderr: ``debug``, ``info``, ``warning``,
            ``error`` or ``critical`` (any case); ``--log-level`` wins. ``info`` shows
            the start line and recoveries besides every warning (dead letters, gateway
            failures, misrouted webhook alerts, SMS left at shutdown), and nothing per
            request or per SMS.
        max_connections: open HTTP connections at most; ``"auto"`` derives it from the
            process's file-descriptor limit (``RLIMIT_NOFILE``, systemd's
            ``LimitNOFILE``), leaving room for the store, the gateway and the logs (at
            most 4096). Past it, the connection waiting longest without a request being
            answered (idle, or its request still arriving) is closed to make room; if
            every one has a request being answered, the newcomer gets ``503``. A number
            above what the limit allows is refused at start.
        idle_timeout: seconds a connection may stay silent when it has no request being
            answered (on opening, or between keep-alive requests) before it is closed.
        read_timeout: seconds a request may take to arrive in full (request line,
            headers and body) from its first byte; a slower one's connection is closed.
            Time spent answering is not counted.
    """

    listen: str = DEFAULT_LISTEN
    tokens: tuple[str, ...] = field(default=(), repr=False)
    max_body: int = 1 << 20
    shutdown_timeout: float = 10.0
    send_resolved: bool = True
    severity_label: str = "severity"
    groups_label: str = "sms_groups"
    default_severity: str = "error"
    allow_numbers: bool = False
    log_level: str = "info"
    max_connections: int | str = "auto"
    idle_timeout: float = 5.0
    read_timeout: float = 10.0

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
        """From a TOML ``[relay]`` table, then the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = {f for f in cls.__dataclass_fields__}
        for key, value in (section or {}).items():
            if key not in known:
                raise ValueError(f"[relay] {key}: unknown key (known: {', '.join(sorted(known))})")
            values[key] = value
        if env.get("SSLSMS_RELAY_TOKENS"):
            values["tokens"] = env["SSLSMS_RELAY_TOKENS"]
        if env.get("SSLSMS_RELAY_LISTEN"):
            values["listen"] = env["SSLSMS_RELAY_LISTEN"]
        return cls(**values).checked()

    def checked(self) -> RelaySettings:
        tokens: object = self.tokens  # from TOML or the environment it may be anything
        if isinstance(tokens, str):
            tokens = tuple(t.strip() for t in tokens.split(",") if t.strip())
        if not isinstance(tokens, list | tuple) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(
                "relay tokens: must be a list of strings (or SSLSMS_RELAY_TOKENS, comma-separated)"
            )
        for position, token in enumerate(tokens):
            if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
                raise ValueError(
                    f"relay tokens[{position}]: must be at least {MIN_TOKEN_LENGTH} characters without spaces"
                )
        listen: object = self.listen
        if not isinstance(listen, str) or ":" not in listen:
            raise ValueError(f"listen={listen!r}: must be HOST:PORT, e.g. {DEFAULT_LISTEN}")
        port_text = listen.rsplit(":", 1)[1]
        if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
            raise ValueError(f"listen={listen!r}: the port must be a number from 0 (any free port) to 65535")
        max_body = integer("max_body", self.max_body, minimum=1024, maximum=64 << 20)
        shutdown = positive("shutdown_timeout", self.shutdown_timeout, maximum=600)
        for name in ("send_resolved", "allow_numbers"):
            flag: object = getattr(self, name)
            if not isinstance(flag, bool):
                raise ValueError(f"{name}={flag!r}: must be true or false")
        for name in ("severity_label", "groups_label"):
            value: object = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}={value!r}: must be a label name")
        if self.default_severity not in SEVERITIES:
            raise ValueError(
                f"default_severity={self.default_severity!r}: must be one of {', '.join(SEVERITIES)}"
            )
        level: object = self.log_level
        if not isinstance(level, str) or level.strip().lower() not in LOG_LEVELS:
            raise ValueError(f"log_level={level!r}: must be one of {', '.join(LOG_LEVELS)} (any case)")
        connections: object = self.max_connections
        if isinstance(connections, str) and connections.strip().lower() == "auto":
            connections = "auto"
        elif isinstance(connections, bool) or not isinstance(connections, int):
            raise ValueError(
                f'max_connections={connections!r}: must be "auto" (from the file-descriptor limit) '
                "or a whole number"
            )
        else:
            connections = integer("max_connections", connections, minimum=1, maximum=1_000_000)
        idle = positive("idle_timeout", self.idle_timeout, maximum=3600)
        read = positive("read_timeout", self.read_timeout, maximum=3600)
        return RelaySettings(
            listen=listen,
            tokens=tuple(tokens),
            max_body=max_body,
            shutdown_timeout=shutdown,
            send_resolved=self.send_resolved,
            severity_label=self.severity_label,
            groups_label=self.groups_label,
            default_severity=self.default_severity,
            allow_numbers=self.allow_numbers,
            log_level=level.strip().lower(),
            max_connections=connections,
            idle_timeout=idle,
            read_timeout=read,
        )
