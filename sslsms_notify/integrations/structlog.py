"""A structlog processor that pages on events at or above a level.

Place it after ``structlog.stdlib.add_log_level`` (or anywhere with
``method_name`` as the level) and *before* the renderer, so it sees the event
dict and not a rendered string::

    structlog.configure(processors=[
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        SMSProcessor(url="sslsms://SID:TOKEN@01712345678", level="error"),
        structlog.processors.JSONRenderer(),
    ])

It copies what it needs and returns the event dict unchanged, so the rest of
the chain still logs the event. It never raises into the caller.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from ..alerting.alert import Severity
from ..alerting.notifier import Notifier
from ..config import Settings

_SKIP_KEYS = frozenset(
    {
        "event",
        "level",
        "timestamp",
        "logger",
        "exc_info",
        "stack",
        "_record",
        "_from_structlog",
        "log_level",
    }
)


def render_event(event: Mapping[str, Any]) -> str:
    text = str(event.get("event", ""))
    extras = " ".join(f"{k}={v}" for k, v in event.items() if k not in _SKIP_KEYS)
    exc = event.get("exc_info")
    if isinstance(exc, BaseException):
        text += f" ({type(exc).__name__}: {exc})" if str(exc) else f" ({type(exc).__name__})"
    elif isinstance(exc, tuple) and len(exc) == 3 and exc[1] is not None:
        text += f" ({type(exc[1]).__name__}: {exc[1]})"
    return f"{text} {extras}".strip()


class SMSProcessor:
    """Forwards events at or above ``level`` (and matching ``when``) into the pipeline."""

    def __init__(
        self,
        notifier: Notifier | None = None,
        *,
        url: str | None = None,
        level: str | int = "error",
        when: Callable[[Mapping[str, Any]], bool] | None = None,
        groups: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        self.notifier = notifier if notifier is not None else Settings.load(url).notifier(**options)
        self.threshold = Severity.parse(level)
        self.when = when
        self.groups = tuple(groups) if groups else None

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            raw_level = event_dict.get("level") or event_dict.get("log_level") or method_name
            try:
                severity = Severity.parse(raw_level)
            except ValueError:
                return event_dict  # e.g. "msg" or "exception" methods without a level
            if severity < self.threshold or self.notifier.is_worker_thread():
                return event_dict
            if self.when is not None and not self.when(event_dict):
                return event_dict
            snapshot = dict(event_dict)  # later processors may change the original
            if snapshot.get("exc_info") is True:  # log.exception(): the exception is ours to fetch, now
                snapshot["exc_info"] = sys.exc_info()
            exc = snapshot.get("exc_info")
            if isinstance(exc, tuple) and len(exc) == 3:
                exc = exc[1]
            exc_type = type(exc).__name__ if isinstance(exc, BaseException) else None
            self.notifier.enqueue_lazy(
                lambda: render_event(snapshot),
                severity=severity,
                template=None,  # the rendered event (key=value pairs too) is its identity
                source=str(snapshot.get("logger") or getattr(logger, "name", "") or ""),
                exc_type=exc_type,
                groups=self.groups,
            )
        except Exception:  # logging must go on even if paging cannot
            pass
        return event_dict
