"""``SMSHandler``: a :class:`logging.Handler` that pages through the alert pipeline.

    handler = SMSHandler("sslsms://SID:TOKEN@01712345678?dedup=300")
    logging.getLogger().addHandler(handler)

or in ``dictConfig``::

    "sms": {"class": "sslsms_notify.SMSHandler", "level": "ERROR",
            "url": "sslsms://SID:TOKEN@01712345678",
            "level_groups": {"CRITICAL": ["oncall", "managers"]}}

``emit()`` never blocks, never raises and takes no lock: it appends the record
to a bounded queue, or, for a repeat of a record seen lately (same message
template, level, logger and exception type), only counts it. The message, the
exception type and its last frame are rendered on the pipeline's worker thread.
Records from this library, httpx, httpcore and uvicorn, and anything logged on
the pipeline's threads, are ignored, so an SMS can never cause an SMS.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from functools import lru_cache
from threading import get_ident
from typing import Any

from ..alerting.alert import Severity
from ..alerting.messages import LOG_RECORD, render_message
from ..alerting.notifier import Notifier
from ..alerting.routing import source_matches
from ..config import Settings
from ..gateway.msisdn import normalize_msisdn

IGNORED_LOGGERS = ("sslsms_notify", "httpx", "httpcore", "uvicorn", "hpack", "h11")


def render_record(record: logging.LogRecord) -> str:
    """The message, plus ``(ExcType: detail at file.py:12 in func)`` for exceptions."""
    return render_message(record.msg, record.args, record.exc_info)


_SETTINGS_FIELDS = {f.name for f in fields(Settings)} - {"level", "groups", "routes"}


def _settings(url: str | None, options: dict[str, Any]) -> Settings:
    """From keywords (``api_token=``, ``sid=``, ``recipients=``...), a URL, or the environment.

    Keywords that name a :class:`Settings` field are taken out of ``options``;
    the rest go to the :class:`Notifier`.
    """
    given = {k: options.pop(k) for k in list(options) if k in _SETTINGS_FIELDS}
    if "recipients" in given:
        numbers = given["recipients"]
        numbers = numbers.split(",") if isinstance(numbers, str) else numbers
        given["recipients"] = tuple(
            normalize_msisdn(n, field=f"recipients[{i}]") for i, n in enumerate(numbers)
        )
    if url is None and given.get("api_token"):
        return Settings(**given).validated()
    return replace(Settings.load(url), **given).validated()


def _level(value: str | int) -> int:
    if isinstance(value, int):
        return value
    number = logging.getLevelName(value.upper())
    if not isinstance(number, int):
        raise ValueError(f"level {value!r} is not a logging level name")
    return number


class SMSHandler(logging.Handler):
    """Sends log records at or above ``level`` as SMS.

    Args:
        url: an ``sslsms://`` URL (default: ``SSLSMS_URL``, then the config file).
        level: minimum level (default: the URL's ``level``, else ERROR).
        level_groups: ``{"ERROR": ["oncall"], "CRITICAL": ["oncall", "managers"]}``:
            a record goes to the groups of the highest level at or below its own.
        logger_groups: ``{"app.db": ["dbas"]}``: records of that logger (or its
            children) go to these groups, plus those ``level_groups`` gives their level.
            A record either table names groups for goes only there, not to the routes.
        groups: ``{"oncall": [...]}``, added to the URL's recipients.
        notifier: use an existing :class:`Notifier` (the handler will not close it).
        close_timeout: seconds ``close()`` (and interpreter exit) waits for delivery.
        **options: any :class:`Notifier` option (``dedup_window``, ``store``, ...).
    """

    #: our own loggers' records never become SMS (see IGNORED_LOGGERS): say_if_unseen knows
    ignores_library_logs = True

    def __init__(
        self,
        url: str | None = None,
        *,
        level: str | int | None = None,
        level_groups: Mapping[str | int, Sequence[str]] | None = None,
        logger_groups: Mapping[str, Sequence[str]] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        notifier: Notifier | None = None,
        close_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        # Everything that can fail comes before logging.Handler.__init__, which registers the
        # handler for logging.shutdown(): a half-made handler there would fail at exit.
        if "close_at_exit" in options:
            raise TypeError(
                "SMSHandler: close_at_exit comes from close_timeout (the seconds close() and "
                "interpreter exit wait for delivery); pass close_timeout instead"
            )
        settings = None if notifier is not None else _settings(url, options)
        chosen_level = _level(level if level is not None else (settings.level if settings else logging.ERROR))
        level_table = sorted(((_level(k), tuple(v)) for k, v in (level_groups or {}).items()), reverse=True)
        logger_table = {k: tuple(v) for k, v in (logger_groups or {}).items()}
        owns_notifier = notifier is None
        if notifier is None:
            assert settings is not None
            all_groups = {**settings.all_groups(), **(groups or {})}
            notifier = settings.notifier(groups=all_groups, close_at_exit=close_timeout, **options)
        try:
            for names in [*(g for _, g in level_table), *logger_table.values()]:
                notifier.router.check_names(names, "SMSHandler groups")
        except ValueError:
            if owns_notifier:
                notifier.close(0)
            raise
        super().__init__(chosen_level)
        self._owns_notifier = owns_notifier
        self.notifier = notifier
        self.close_timeout = close_timeout
        self._level_groups = level_table
        self._logger_groups = logger_table
        self._groups_for = lru_cache(maxsize=4096)(self._compute_groups)
        self._ignored: dict[str, bool] = {}
        self._converter = self._payload  # one bound method for every coalescer entry
        # The notifier's producer side, chosen once: counting an exact repeat is one call.
        self._coalescing = notifier.intake.coalescing
        self._repeat = notifier.intake.repeater()

    def __repr__(self) -> str:
        return f"<SMSHandler level={logging.getLevelName(self.level)} {self.notifier!r}>"

    def _compute_groups(self, levelno: int, name: str) -> tuple[str, ...] | None:
        chosen: list[str] = []
        for threshold, names in self._level_groups:
            if levelno >= threshold:
                chosen.extend(names)
                break
        for prefix, names in self._logger_groups.items():
            if source_matches(name, prefix):
                chosen.extend(names)
        return tuple(dict.fromkeys(chosen)) or None

    def handle(self, record: logging.LogRecord) -> Any:
        # logging.Handler.handle() holds the handler's lock around emit(). Nothing here
        # needs it (the pipeline's queue and repeat counters are lock-free), and for a
        # repeat the lock, the filter call and emit()'s frame would be most of the cost.
        if self.filters:
            result: object = self.filter(record)  # 3.12+ may return a record
            if not result:
                return result
            if isinstance(result, logging.LogRecord):  # Python 3.12+: a filter may swap the record
                record = result
        try:
            msg = record.msg
            if self._coalescing and type(msg) is str and get_ident() not in self.notifier.worker.idents:
                exc_info = record.exc_info
                # An exact repeat: the same call with the same arguments (values that name
                # something, "web1", must not be counted as repeats of "web2").
                key = (
                    (msg, record.args, record.levelno, record.name)
                    if not exc_info
                    else (msg, record.args, record.levelno, record.name, exc_info[0])
                )
                try:
                    if self._repeat(key, record):  # a repeat of a record seen lately: counted
                        return True
                except Exception:  # arguments that cannot be hashed: queue it, don't count it
                    self._forward(record, None)
                    return True
                self._forward(record, key)
            else:
                self.emit(record)
        except Exception:
            self.handleError(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._forward(record, None)
        except Exception:
            self.handleError(record)

    def _forward(self, record: logging.LogRecord, key: tuple[Any, ...] | None) -> None:
        """Queue a record (``key``: the identity to count its repeats under, if any)."""
        ignored = self._ignored.get(record.name)
        if ignored is None:
            ignored = record.name.startswith(IGNORED_LOGGERS)
            if len(self._ignored) < 10_000:
                self._ignored[record.name] = ignored
        notifier = self.notifier
        if ignored or notifier.is_worker_thread():
            return
        if notifier.enqueue(key, self._payload(record)) and key is not None:
            notifier.intake.register(key, record, self._converter)

    def _payload(self, record: logging.LogRecord) -> tuple[Any, ...]:
        """The record as the pipeline queues an alert; rendered later, on its intake thread.

        No template: the identity is the rendered message with its measurements
        blanked (the fingerprint rule), as for every other alert, so
        ``log.error("%s is down", "web1")`` and ``"web2"`` stay two alerts.
        """
        exc = record.exc_info[1] if record.exc_info else None
        # queued.pack(), inlined: the first record of a kind pays for every call here
        return (
            (LOG_RECORD, record.msg, record.args, record.exc_info),
            int(Severity.parse(record.levelno)),
            None,
            self._groups_for(record.levelno, record.name),
            record.name,
            (),
            None,
            type(exc).__name__ if exc is not None else None,
            None,
            None,
            False,
            (),
        )

    def flush(self) -> None:
        self.notifier.flush(self.close_timeout)

    def close(self) -> None:
        try:
            if self._owns_notifier:
                self.notifier.close(self.close_timeout)
        finally:
            super().close()
