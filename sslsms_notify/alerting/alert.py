"""What the pipeline carries: an :class:`Alert`, and how alike alerts are recognised."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import IntEnum

from ..severity import SEVERITY_NAMES
from .fingerprint import template_of


class Severity(IntEnum):
    """Ordered like :mod:`logging` levels, so a handler maps them one to one."""

    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    @property
    def tag(self) -> str:
        return _TAGS[self]

    @classmethod
    def parse(cls, value: Severity | str | int) -> Severity:
        """``"error"``, ``"ERR"``, ``"crit"``, ``40`` or a logging level number."""
        if isinstance(value, Severity):
            return value
        if type(value) is int and value in _BY_NUMBER:  # the logging hot path
            return _BY_NUMBER[value]
        if isinstance(value, int) and not isinstance(value, bool):
            # logging levels between ours round down (e.g. 45 -> ERROR)
            eligible = [s for s in cls if s <= value]
            return max(eligible) if eligible else cls.DEBUG
        if isinstance(value, str):
            key = value.strip().upper()
            if key in _ALIASES:
                return _ALIASES[key]
        choices = ", ".join(s.name.lower() for s in cls)
        raise ValueError(f"severity {value!r} is not one of {choices}")


_TAGS = {
    Severity.DEBUG: "DEBUG",
    Severity.INFO: "INFO",
    Severity.WARNING: "WARN",
    Severity.ERROR: "ERROR",
    Severity.CRITICAL: "CRIT",
}
_BY_NUMBER = {int(s): s for s in Severity}
# every name and short form of the one table (severity.py), upper case
_ALIASES = {name.upper(): Severity[sev.upper()] for name, sev in SEVERITY_NAMES.items()}


@dataclass(frozen=True, slots=True)
class Alert:
    text: str
    severity: Severity = Severity.ERROR
    source: str = ""
    host: str = ""
    tags: frozenset[str] = field(default_factory=frozenset)
    #: explicit identity; alerts with the same key are the same alert
    key: str | None = None
    #: recipient groups or numbers chosen by the producer (routing rules otherwise)
    groups: tuple[str, ...] | None = None
    #: the message before formatting (a logging record's ``msg``), if known
    template: str | None = None
    exc_type: str | None = None
    created_at: float = 0.0

    @property
    def fingerprint(self) -> str:
        """Stable identity: the key, or source + severity + template + exception type."""
        return fingerprint_of(
            self.key,
            self.source,
            self.severity,
            self.template if self.template is not None else self.text,
            self.exc_type,
        )


def fingerprint_of(
    key: str | None, source: str, severity: Severity, template: str, exc_type: str | None
) -> str:
    """The identity of an alert (see :attr:`Alert.fingerprint`), without building one."""
    if key:
        basis = f"key\0{key}"
    else:
        # Measurements are blanked in the template too: f-string log messages
        # ("order 17 failed") must not make every record a new alert.
        basis = f"{source}\0{int(severity)}\0{template_of(template)}\0{exc_type or ''}"
    return hashlib.blake2b(basis.encode(), digest_size=10).hexdigest()
