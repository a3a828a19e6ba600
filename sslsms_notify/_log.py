"""The library's own logs: structlog, rendered into stdlib loggers named ``sslsms_notify.*``.

We do not use structlog's global configuration (that belongs to the
application); our bound loggers carry their own processors and hand a rendered
line to the stdlib logger, whose handlers the application controls. Every
known secret is scrubbed from every value before rendering, and our
:class:`~sslsms_notify.SMSHandler` ignores these loggers so they never become SMS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import structlog

LOGGER_PREFIX = "sslsms_notify"
MASK = "***"

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # a thread of the parent may have held it at the fork
    global _secrets_lock
    _secrets_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)
_TOKEN_IN_URL = re.compile(r"(api_token=)[^&\s'\"]+")


def register_secret(secret: str) -> None:
    """Remember a secret so no log line of ours, or httpx's, ever shows it."""
    if secret and len(secret) >= 4:
        with _secrets_lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    text = _TOKEN_IN_URL.sub(r"\1" + MASK, text)
    for secret in tuple(_secrets):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _redact_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = redact(value)
        elif not isinstance(value, int | float | bool | type(None)):
            event_dict[key] = redact(str(value))
    return event_dict


def get_logger(name: str) -> Any:
    stdlib = logging.getLogger(name if name.startswith(LOGGER_PREFIX) else f"{LOGGER_PREFIX}.{name}")
    return structlog.wrap_logger(
        stdlib,
        processors=[
            structlog.stdlib.filter_by_level,
            _redact_event,
            structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class RedactSecretsFilter(logging.Filter):
    """Scrubs tokens from third-party records (httpx logs full URLs, query included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


_installed = False


def install_third_party_redaction() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).addFilter(RedactSecretsFilter())


class ErrorLog:
    """Error lines a failing part repeats, at most one per message every ``every`` seconds.

    A broken store must not flood the log, and one failure must not hide another: each
    message has its own clock.
    """

    def __init__(self, logger: Any, every: float = 10.0) -> None:
        self._logger = logger
        self._every = every
        self._last: dict[str, float] = {}

    def error(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last.get(what, -self._every) >= self._every:
            self._last[what] = now
            self._logger.error(what, error=f"{type(exc).__name__}: {exc}")


_said: set[str] = set()
#: the program reports losses itself (the CLI's outcome line): say_if_unseen stays quiet
losses_reported_elsewhere = False


def say_if_unseen(logger_name: str, key: str, line: str, level: int = logging.ERROR) -> None:
    """Write ``line`` to stderr once per process, if no log handler would show ``logger_name``'s
    record at ``level``.

    For losses (an SMS given up, alerts dropped, SMS a memory store loses at close): an
    application whose only handler is our :class:`~sslsms_notify.SMSHandler` (which never
    pages our own lines) would otherwise lose them without a word. Call it beside the log
    line, not instead of it.
    """
    if losses_reported_elsewhere or key in _said or _visible(logging.getLogger(logger_name), level):
        return
    _said.add(key)
    with contextlib.suppress(Exception):  # stderr closed: nothing more to do
        print(f"sslsms-notify: {redact(line)}", file=sys.stderr, flush=True)


def _visible(logger: logging.Logger, level: int) -> bool:
    if not logger.isEnabledFor(level):
        return False
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found = True
            if level >= handler.level and not getattr(handler, "ignores_library_logs", False):
                return True
        current = current.parent if current.propagate else None
    last = logging.lastResort
    return not found and last is not None and level >= last.level
