"""``sslsms-notify``: send alerts from scripts, run the emulator, inspect the outbox.

Every input gets one clear line: a bad option, URL argument or TOML key is refused
where it enters (``<field>=<value>: <rule>``); an unexpected internal error prints one
line and suggests ``--debug`` for the traceback. No traceback reaches the user otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from .config import (
    ConfigError,
    NoConfiguration,
    Settings,
    default_state_url,
    legacy_state_path,
    looks_like_number,
    mask_url,
    state_files,
)
from .gateway.clean import clean_text
from .gateway.msisdn import InvalidMsisdnError, normalize_msisdn
from .gateway.text import MAX_SMS_CHARS, count_segments, truncate_to_segments
from .severity import SEVERITIES, SEVERITY_ALIASES
from .validation import LOG_LEVELS, Number, StoreURL, Text

# Exit codes a script can act on.
EXIT_DELIVERED = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_SUPPRESSED = 3
EXIT_THROTTLED = 4
EXIT_AUTH = 5
EXIT_UNREACHABLE = 6
EXIT_RELAY_UNREACHABLE = 7
#: Ctrl-C (SIGINT): 128 + 2, as a shell reports a process SIGINT ended
EXIT_INTERRUPTED = 130

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEBUG_HINT = "run with --debug for the traceback"
#: how often ``send`` looks at the outcome of its SMS
POLL = 0.03
#: what ``send`` gives the pipeline to finish up once its own SMS are decided
CLOSE_GRACE = 0.5
#: at most this long for SMS an earlier run left that are due again soon
LEFTOVER_GRACE = 3.0
#: what ``send`` gives the pipeline to put its alert in the store after Ctrl-C
INTERRUPT_GRACE = 0.25

_TIMEOUT = Number(0, 3600, low_open=True, unit="seconds")
_KEY = Text("a key", min_length=1, max_length=200)
_SOURCE = Text("a name", max_length=100)


class InputError(click.ClickException):
    """Bad input: one line, exit 2."""

    exit_code = EXIT_BAD_INPUT


class Unreachable(click.ClickException):
    """A store or gateway that does not answer: one line, exit 6."""

    exit_code = EXIT_UNREACHABLE


class _State:
    debug = False


def _one_line(text: str) -> str:
    return " ".join(mask_url(str(text)).split())


#: click >= 8.2 raises this for a group called without a command (it prints the help)
_NoArgsIsHelp: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_Never", (click.UsageError,), {})
)


class _Main(click.Group):
    """The command group, with errors printed as one line and tracebacks only with ``--debug``."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # Ctrl-C
                click.echo("interrupted", err=True)
                sys.exit(EXIT_INTERRUPTED)
            click.echo("Aborted.", err=True)
            sys.exit(EXIT_ERROR)
        except _NoArgsIsHelp as exc:  # a group alone: its help is the answer
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:
            # `sslsms-notify outbox list | head`: the reader left; nothing to say, and
            # nothing more to write (Python's flush at exit would fail again)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_ERROR)
        except Exception as exc:
            if _State.debug:
                raise
            click.echo(
                f"Error: internal error: {type(exc).__name__}: {_one_line(str(exc))} ({DEBUG_HINT})",
                err=True,
            )
            sys.exit(EXIT_ERROR)
        sys.exit(result if isinstance(result, int) else 0)


def _setup_logging(debug: bool, *, level: str | None = None) -> None:
    """The library's own log lines: none by default (every command reports its outcome
    itself, in one line that carries the reason), everything on stderr with ``--debug``.
    ``level``: lines at or above it on stderr (``serve``, whose log is its only voice),
    uvicorn's and asyncio's too, at WARNING at least (their INFO lines are start-up chatter)."""
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sslsms-notify: %(levelname)s: %(message)s"))
    if debug:
        threshold = logging.DEBUG
    elif level is not None:
        threshold = logging.getLevelNamesMapping()[level.upper()]
    else:
        handler, threshold = logging.NullHandler(), logging.CRITICAL + 1
    loggers = {"sslsms_notify": threshold}
    if debug:
        loggers["httpx"] = threshold
    if debug or level is not None:
        loggers.update(dict.fromkeys(("uvicorn", "asyncio"), max(threshold, logging.WARNING)))
    for name, at in loggers.items():
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(at)
        logger.propagate = False


@click.group(cls=_Main, context_settings=CONTEXT)
@click.option(
    "--debug",
    is_flag=True,
    help="Show the library's log (hidden otherwise), and tracebacks of internal errors.",
)
@click.version_option(package_name="sslsms-notify")
def main(debug: bool) -> None:
    """Alerts to SMS through the SSL Wireless Push SMS API v3.

    Configure with --url, the SSLSMS_URL environment variable, or a TOML file
    (default ~/.config/sslsms-notify/config.toml). Shell completion:
    eval "$(_SSLSMS_NOTIFY_COMPLETE=bash_source sslsms-notify)".
    """
    _State.debug = debug
    _setup_logging(debug)


# -- input checks -------------------------------------------------------------------------
def _check(rule: Any, label: str, value: Any) -> Any:
    try:
        return rule.check(label, value, text=True)
    except ValueError as exc:
        raise InputError(str(exc)) from None


#: ``--url`` with ``--config``: refused (the URL is a whole configuration of its own)
BOTH_SOURCES = (
    "--url and --config cannot be used together: --url is the whole configuration "
    "(put the URL in the file as url = ..., or keep the token in SSLSMS_URL)"
)


def _settings(url: str | None, config: str | None) -> tuple[Settings, str]:
    if url is not None and config is not None:
        raise InputError(BOTH_SOURCES)
    try:
        return Settings.load_with_source(url, config)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def _cli_store(settings: Settings) -> str:
    """The configured store; a memory store would forget everything between runs, so
    the CLI uses its own SQLite file instead: one per gateway account (SID and base
    URL), shared with the apprise CLI plugin, so two accounts never share an outbox."""
    if settings.store != "memory":
        return settings.store
    try:
        return default_state_url(settings.sid, settings.base_url)
    except ConfigError as exc:
        raise InputError(str(exc)) from None


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def _argument_text(text: str, what: str) -> str:
    """Arguments come decoded with surrogate escapes: undecodable bytes show up here."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _utf8_error(text, what) from None
    return text


def _utf8_error(text: str, what: str) -> InputError:
    raw = text.encode("utf-8", "surrogateescape")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputError(f"{what} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})")
    return InputError(f"{what} is not valid UTF-8")


def _read_text(text: str | None) -> str:
    if text is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError("TEXT is missing (give it as an argument or on standard input)")
        try:
            text = _utf8(sys.stdin.buffer.read(), "standard input")
        except OSError as exc:
            raise InputError(f"cannot read standard input: {exc.strerror or exc}") from None
        what = "standard input"
    else:
        text = _argument_text(text, "TEXT")
        what = "TEXT"
    text = text.strip()
    if not text:
        raise InputError(f"{what} is empty")
    if not clean_text(text).strip():
        raise InputError(f"{what} has nothing to send once control characters are removed")
    return text


def _numbers_file(path: str) -> list[str]:
    """``--to-file``: one number per line; blank lines and ``#`` comments (however
    indented, or after a number) are skipped."""
    label = f"--to-file {path!r}"
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise InputError(f"{label}: is a directory, not a file of numbers") from None
    except OSError as exc:
        raise InputError(f"{label}: cannot read: {exc.strerror or exc}") from None
    numbers = []
    for number, raw_line in enumerate(data.splitlines(), start=1):
        try:
            line = raw_line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"--to-file line {number}: not valid UTF-8 (byte 0x{raw_line[exc.start]:02x})"
            ) from None
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        numbers.append(_number(entry, f"--to-file line {number}:"))
    if not numbers:
        raise InputError(f"{label} holds no numbers (only blank lines and # comments)")
    return numbers


def _number(raw: str, label: str) -> str:
    try:
        return normalize_msisdn(raw, field=label)
    except InvalidMsisdnError as exc:
        raise InputError(str(exc)) from None


def _targets(groups: Mapping[str, Any] | None, to: Sequence[str], to_file: str | None) -> list[str]:
    """``--to`` values (comma lists allowed) and ``--to-file`` numbers. A target shaped
    like a number (digits, +, spaces, dashes, dots, parentheses) is a number and gets
    the number rule; anything else is a group name, checked against ``groups`` (None:
    not here; a relay knows its own groups)."""
    chosen: list[str] = []
    for value in to:
        value = _argument_text(value, "--to")
        parts = [p for p in value.split(",") if p.strip()] if value.strip() else [value]
        for part in parts:
            target = part.strip()
            if not target:
                raise InputError(f"--to {part!r}: give a phone number or a group name")
            if looks_like_number(target):
                chosen.append(_number(target, "--to"))
            elif groups is None or target in groups:
                chosen.append(target)
            else:
                known = f"groups: {', '.join(sorted(groups))}" if groups else "no groups are configured"
                raise InputError(f"--to {target!r}: no such group ({known})")
    if to_file is not None:
        chosen += _numbers_file(to_file)
    return list(dict.fromkeys(chosen))


def _open_store(spec: str, label: str) -> Any:
    """A store, or one line saying why not (exit 2: it is configuration)."""
    from .stores import StoreUnavailableError, open_store

    try:
        return open_store(spec)
    except ImportError as exc:
        # the Redis store re-raises the missing import with its own message (no .name)
        package = exc.name or getattr(exc.__cause__, "name", None) or "redis"
        raise InputError(
            f"{label}={mask_url(spec)!r}: needs the '{package}' package (pip install 'sslsms-notify[redis]')"
        ) from None
    except (StoreUnavailableError, ValueError) as exc:
        raise InputError(f"{_one_line(str(exc))} (pass another --store, or set XDG_STATE_HOME)") from None


def _configuration_options(func: Any) -> Any:
    """``--url`` and ``--config``, the same on every command that reads the configuration."""
    func = click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file. Not with --url."
    )(func)
    return click.option(
        "--url", help="sslsms:// URL (default: the config file, else SSLSMS_URL). Not with --config."
    )(func)


# -- send -----------------------------------------------------------------------------------
@dataclass
class Delivery:
    """What became of the SMS one alert created, and only those."""

    #: the intake's decision (:class:`~.alerting.notifier.Ticket` status), or "undecided"
    status: str
    csms_ids: list[str] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    pending: int = 0
    #: phones whose SMS the per-phone cap held (they get a digest later)
    throttled: int = 0
    #: the gateway refused the credentials while these SMS were pending
    auth_failed: bool = False
    #: why the gateway holds back pending SMS, when the last error was a rate limit (4029...)
    rate_limited: str = ""
    #: why: the rejection, the failures' reasons, or why SMS are still pending
    reasons: list[str] = field(default_factory=list)


def deliver(
    notifier: Any, ticket: Any, deadline: float, progress: Callable[[int, int], None] | None = None
) -> Delivery:
    """Wait (until ``deadline``, a ``time.monotonic()`` value) for the SMS ``ticket`` created.

    Returns as soon as each is delivered or failed, or when the gateway refuses the
    credentials while some are pending; never waits for SMS other processes left in
    a shared outbox. ``progress(done, total)`` is called as SMS are decided. Used by
    ``send`` and by the apprise plugin.
    """
    if not ticket.wait(max(0.0, deadline - time.monotonic())):
        return Delivery("undecided", reasons=["the store did not take the alert in time"])
    delivery = Delivery(ticket.status, list(ticket.csms_ids), throttled=ticket.throttled)
    if ticket.status == "rejected" or ticket.status == "dropped":
        delivery.reasons.append(ticket.error)
        return delivery
    if not delivery.csms_ids:
        return delivery
    while True:
        outcomes = notifier.outcomes(delivery.csms_ids)
        pending = [i for i, state in outcomes.items() if state == "pending"]
        if progress is not None:
            progress(len(outcomes) - len(pending), len(outcomes))
        if not pending:
            break
        if notifier.dispatcher.auth_failed.is_set():
            delivery.auth_failed = True
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    _count(notifier, delivery, outcomes)
    return delivery


def _count(notifier: Any, delivery: Delivery, outcomes: dict[str, str]) -> None:
    delivery.delivered = sum(1 for s in outcomes.values() if s == "delivered")
    delivery.failed = sum(1 for s in outcomes.values() if s == "failed")
    delivery.pending = sum(1 for s in outcomes.values() if s == "pending")
    unfinished = [i for i, s in outcomes.items() if s != "delivered"]
    reasons: dict[str, None] = {}
    if unfinished:
        try:
            items = notifier.store.outbox_get(unfinished)
        except Exception:
            items = {}
        for item in items.values():
            if item.last_error:
                reasons[_one_line(item.last_error)] = None
    last_error = notifier.dispatcher.last_error
    if delivery.pending and last_error is not None:
        reasons[_one_line(str(last_error))] = None
    if delivery.pending and _is_rate_limit(last_error):
        delivery.rate_limited = _rate_limit_reason(last_error)
    if delivery.pending and not reasons:
        reasons["no answer from the gateway yet"] = None
    delivery.reasons.extend(reasons)


def _is_rate_limit(error: Any) -> bool:
    from .gateway.errors import RateLimitError

    return isinstance(error, RateLimitError)


def _rate_limit_reason(error: Any) -> str:
    """A gateway rate limit in words, with its API code."""
    code = getattr(error, "status_code", None)
    if code == 4029:
        return "the gateway's request quota is used up (4029)"
    if code == 4031:
        return "the gateway refused more requests per second than the account allows (4031)"
    if code == 4030:
        return "the gateway refused a request to more than 100 numbers (4030)"
    return f"the gateway limits our requests ({_one_line(str(error))})"


def _await_group(
    notifier: Any, delivery: Delivery, names: Sequence[str], since: float, deadline: float
) -> None:
    """``group_wait``: once the group's buffer is sent, wait for the SMS it became.

    A group SMS carries ids of its own, so it is found by its phones and its time: the
    open and dead outbox items to the group's phones created after this alert.
    """
    from .stores.base import OutboxState

    store = notifier.store
    numbers = {n for name in names for n in notifier.router.numbers(name)}

    def buffered() -> bool:
        def read(tx: Any) -> bool:
            tx.groups.load(list(names))
            return any(tx.groups.get(name) is not None for name in names)

        return bool(store.transact(read))

    while buffered():
        if time.monotonic() >= deadline:
            return
        time.sleep(POLL * 3)

    def ours() -> tuple[list[Any], list[Any]]:
        items = [
            i for i in store.outbox_list(None, limit=100_000) if i.msisdn in numbers and i.created_at >= since
        ]
        return [i for i in items if i.state is not OutboxState.DEAD], [
            i for i in items if i.state is OutboxState.DEAD
        ]

    open_items, dead = ours()
    while open_items and time.monotonic() < deadline and not notifier.dispatcher.auth_failed.is_set():
        time.sleep(POLL)
        open_items, dead = ours()

    def held(tx: Any) -> int:
        tx.digests.load(list(numbers))
        return sum(1 for n in numbers if tx.digests.get(n) is not None)

    delivery.status = "queued"
    delivery.auth_failed = bool(open_items) and notifier.dispatcher.auth_failed.is_set()
    delivery.csms_ids = [i.csms_id for i in open_items + dead]
    _count(
        notifier, delivery, {i.csms_id: "pending" for i in open_items} | {i.csms_id: "failed" for i in dead}
    )
    delivery.throttled = int(store.transact(held))
    # sent SMS leave the outbox: the group's other phones got theirs
    delivery.delivered = max(0, len(numbers) - delivery.pending - delivery.failed - delivery.throttled)


def _severity(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--severity``: a name or an alias the relay API takes too, in any case; normalised."""
    value = value.lower()
    return SEVERITY_ALIASES.get(value, value)


@main.command(context_settings=CONTEXT)
@click.argument("text", required=False)
@click.option(
    "--to",
    "targets",
    multiple=True,
    metavar="NUMBER|GROUP",
    help="A phone number or a configured group (comma lists too); repeat for several. "
    "Digits, +, spaces, dashes, dots and parentheses make a number; anything else names a group.",
)
@click.option(
    "--to-file",
    type=click.Path(dir_okay=False),
    help="A file of phone numbers, one per line; blank lines and # comments are skipped.",
)
@click.option(
    "--severity",
    default="error",
    show_default=True,
    type=click.Choice([*SEVERITIES, *SEVERITY_ALIASES], case_sensitive=False),
    callback=_severity,
    help="Any case; warn, err, crit and fatal are aliases (as in the relay API).",
)
@click.option("--key", help="Identity for dedup (default: derived from the text).")
@click.option("--source", default="", help="Service or check name shown in the SMS.")
@_configuration_options
@click.option(
    "--store",
    help="State shared between runs (default: the configured store, else a SQLite file "
    "per gateway account in ~/.local/state/sslsms-notify).",
)
@click.option(
    "--timeout",
    default="30",
    show_default=True,
    metavar="SECONDS",
    help="Seconds to wait for delivery (0 < SECONDS <= 3600).",
)
@click.option(
    "--relay",
    envvar="SSLSMS_RELAY",
    metavar="URL",
    help="Hand the alert to a relay (sslsms-notify serve) instead of the gateway; "
    "its token comes from SSLSMS_RELAY_TOKEN. Default: SSLSMS_RELAY.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def send(
    text: str | None,
    targets: tuple[str, ...],
    to_file: str | None,
    severity: str,
    key: str | None,
    source: str,
    url: str | None,
    config_path: str | None,
    store: str | None,
    timeout: str,
    relay: str | None,
    as_json: bool,
) -> None:
    """Send TEXT (or standard input) through the alert pipeline, and wait for it.

    \b
    Exit codes (about the SMS this run created, never about others in the outbox):
      0  delivered to at least one phone (or, with group_wait, buffered: see below)
      2  rejected input: bad option or configuration, no recipients, no route
         matching the alert, empty text, text that is not UTF-8, or every SMS
         refused by the gateway (dead letters)
      3  suppressed: a repeat inside the dedup window (counted for the summary)
      4  held by a per-phone cap (it goes out in a digest)
      5  credentials refused: the gateway's (exits after one request), or the
         relay's (SSLSMS_RELAY_TOKEN) with --relay
      6  not sent yet: the gateway is unreachable, or its rate limit or request quota
         (4029) holds it back; the SMS waits in the outbox and the next run sends it
      7  with --relay: the relay did not take the alert (nothing was queued)
      130  interrupted (Ctrl-C): the SMS waits in the outbox; the next run sends it
      1  internal error (run with --debug for the traceback)

    \b
    Configuration: --url, else --config, else SSLSMS_CONFIG or the default file, else
    SSLSMS_URL. --url and --config cannot be combined (--url is a whole configuration
    and cannot hold groups or routes): a config file without a token takes it from
    SSLSMS_URL instead.

    \b
    State: without --store and without a configured store, dedup windows, caps and
    the outbox live in a SQLite file per gateway account (SID and base URL), so an
    SMS one account left is never sent through another.

    \b
    With --relay (or SSLSMS_RELAY), the alert goes to a relay, which holds the
    gateway token and the shared state; this machine needs only SSLSMS_RELAY_TOKEN.
    The same exit codes apply to what the relay reports for this alert.

    \b
    With group_wait set, the alert waits to be sent with the other alerts of its
    group. If the group's SMS is due within --timeout, send waits for it and reports
    its delivery; otherwise it exits 0 with outcome "buffered": the alert is in the
    store and the next run (or any long-running process on the store) sends it.

    \b
    Examples:
      sslsms-notify send --to oncall "db1: disk 95% full"
      df -h | sslsms-notify send --to 01712345678 --severity warning
      sslsms-notify send --to-file oncall.txt --json "deploy finished"
      sslsms-notify send --to oncall --key disk-full/db1 "disk 95% full on db1"
      SSLSMS_RELAY_TOKEN=... sslsms-notify send --relay http://relay:8026 --to oncall "db1 down"
    """
    _take_sigint()
    if relay:
        _send_via_relay(relay, text, targets, to_file, severity, key, source, timeout, as_json)
    try:
        wait = _check(_TIMEOUT, "--timeout", timeout)
        if key is not None:
            key = _check(_KEY, "--key", _argument_text(key, "--key"))
        source = _check(_SOURCE, "--source", _argument_text(source, "--source"))
        settings, _where = _settings(url, config_path)
        state = _check(StoreURL(), "--store", store) if store is not None else _cli_store(settings)
        chosen = _targets(settings.all_groups(), targets, to_file)
        if not chosen and not settings.all_groups():
            raise InputError(
                "no recipients: pass --to NUMBER|GROUP or --to-file FILE, or put numbers in the URL "
                "(sslsms://SID:TOKEN@01712345678)"
            )
        text = _read_text(text)
        groups = settings.all_groups() or {"cli": tuple(t for t in chosen if looks_like_number(t))}
        notifier = _notifier(settings, groups, state)
    except click.ClickException as exc:
        _finish(exc.exit_code, {"outcome": "rejected", "error": _one_line(exc.format_message())}, as_json)
    show_progress = len(chosen) > 100 and not as_json and sys.stderr.isatty()
    deadline = time.monotonic() + wait
    try:
        with _progress_bar(show_progress) as progress:
            code, payload = _send(notifier, text, severity, key, source, chosen, deadline, progress)
    except KeyboardInterrupt:
        _interrupted(notifier, as_json)
    except BaseException:
        notifier.close(CLOSE_GRACE)
        raise
    try:
        notifier.close(_leftover_grace(notifier, deadline) if code == EXIT_DELIVERED else CLOSE_GRACE)
    except KeyboardInterrupt:  # the outcome is known: stop staying for leftovers, and report it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        notifier.close(INTERRUPT_GRACE)
    payload = {**payload, "requests": notifier.stats().get("requests", 0)}
    if code == EXIT_UNREACHABLE and not notifier.store.durable:
        payload["error"] = str(payload.get("error", "")).replace(
            "waiting in the outbox: the next run sends it", "lost: a memory store keeps nothing between runs"
        )
    warning = _auth_warning(notifier, payload["outcome"])
    if warning:
        payload["warning"] = warning
    _finish(code, payload, as_json)


def _take_sigint() -> None:
    """Ctrl-C (SIGINT) interrupts ``send``, even when it started with SIGINT ignored
    (a shell script's background job inherits SIG_IGN, and Python then never raises
    KeyboardInterrupt: the wait ran to its end). Stopping is safe: the SMS waits in
    the outbox for the next run."""
    try:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread (an embedding caller): leave it be
        pass


def _interrupted(notifier: Any, as_json: bool) -> NoReturn:
    """Ctrl-C while ``send`` waits: stop at once. The alert goes into the store (a short
    grace), the request under way is abandoned (its SMS are due again, same csms_id)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the close short
    try:
        notifier.close(INTERRUPT_GRACE)
        durable = bool(notifier.store.durable)
    except Exception:
        durable = False
    message = (
        "the SMS waits in the outbox; the next run sends it"
        if durable
        else "the SMS is lost: a memory store keeps nothing between runs"
    )
    _finish(EXIT_INTERRUPTED, {"outcome": "interrupted", "error": message}, as_json)


def _auth_warning(notifier: Any, outcome: str) -> str:
    """When this run's SMS did not need the gateway (a repeat, a capped or buffered
    alert) but the gateway refused the credentials for other SMS in this run, say so:
    the exit code alone would hide a wrong token."""
    if outcome not in ("suppressed", "throttled", "buffered"):
        return ""
    dispatcher = notifier.dispatcher
    if not dispatcher.auth_failed.is_set():
        return ""
    error = f" ({_one_line(str(dispatcher.last_error))})" if dispatcher.last_error is not None else ""
    return (
        f"the gateway refused the credentials for other SMS in this run{error}: "
        "check the API token and the SID; those SMS wait in the outbox"
    )


_RELAY_EXIT = {
    "delivered": EXIT_DELIVERED,
    "buffered": EXIT_DELIVERED,
    "suppressed": EXIT_SUPPRESSED,
    "throttled": EXIT_THROTTLED,
    "rejected": EXIT_BAD_INPUT,
    "unrouted": EXIT_BAD_INPUT,
    "failed": EXIT_BAD_INPUT,
    "auth_failed": EXIT_AUTH,
    "relay_refused": EXIT_AUTH,
    "unreachable": EXIT_UNREACHABLE,
    "rate_limited": EXIT_UNREACHABLE,
    "relay_unreachable": EXIT_RELAY_UNREACHABLE,
}


def _send_via_relay(
    relay: str,
    text: str | None,
    targets: tuple[str, ...],
    to_file: str | None,
    severity: str,
    key: str | None,
    source: str,
    timeout: str,
    as_json: bool,
) -> NoReturn:
    """``send --relay``: the relay decides and sends; we report what it says of this alert."""
    from .relay.client import send_via_relay

    try:
        wait = _check(_TIMEOUT, "--timeout", timeout)
        if key is not None:
            key = _check(_KEY, "--key", _argument_text(key, "--key"))
        source = _check(_SOURCE, "--source", _argument_text(source, "--source"))
        token = os.environ.get("SSLSMS_RELAY_TOKEN", "").strip()
        if not token:
            raise InputError("SSLSMS_RELAY_TOKEN is not set: the relay needs its bearer token")
        chosen = _targets(None, targets, to_file)
        alert: dict[str, Any] = {"text": _read_text(text), "severity": severity}
        if source:
            alert["source"] = source
        if key is not None:
            alert["key"] = key
        if chosen:
            alert["groups"] = list(dict.fromkeys(chosen))
    except click.ClickException as exc:
        _finish(exc.exit_code, {"outcome": "rejected", "error": _one_line(exc.format_message())}, as_json)
    try:
        result = send_via_relay(relay, token, alert, wait=wait)
    except KeyboardInterrupt:
        message = "the relay sends the alert if it took it already; nothing was kept here"
        _finish(EXIT_INTERRUPTED, {"outcome": "interrupted", "error": message}, as_json)
    payload: dict[str, Any] = {"outcome": result.outcome, "relay": mask_url(relay)}
    if "sms" in result.detail:
        payload.update(result.detail["sms"])
    if result.error:
        payload["error"] = _one_line(result.error)
    _finish(_RELAY_EXIT.get(result.outcome, EXIT_ERROR), payload, as_json)


def _leftover_grace(notifier: Any, deadline: float) -> float:
    """How long to stay for SMS an earlier run left in the outbox, once ours are delivered.

    They are not this run's business (its outcome is already known), but "the next
    run sends them" is the promise of exit 6: SMS due within a few seconds get that
    long; SMS backing off for longer wait for a later run.
    """
    try:
        due = notifier.store.outbox_next_due()
        if due is None:
            return CLOSE_GRACE
        left = min(LEFTOVER_GRACE, deadline - time.monotonic())
        return max(CLOSE_GRACE, left) if due - notifier.store.now() <= left else CLOSE_GRACE
    except Exception:
        return CLOSE_GRACE


@contextmanager
def _progress_bar(show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on a terminal for large sends; nothing when piped."""
    if not show:
        yield None
        return
    bar: Any = None
    shown = 0

    def update(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(length=total, label="sending", file=sys.stderr)
            bar.__enter__()
        bar.update(done - shown)
        shown = done

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _notifier(settings: Settings, groups: dict[str, tuple[str, ...]], state: str) -> Any:
    backend = _open_store(state, "--store")
    try:
        return settings.notifier(groups=groups, store=backend, close_at_exit=None)
    except ValueError as exc:
        backend.close()
        raise InputError(str(exc)) from None


def _send(
    notifier: Any,
    text: str,
    severity: str,
    key: str | None,
    source: str,
    chosen: list[str],
    deadline: float,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, dict[str, Any]]:
    since = notifier.store.now()
    try:
        ticket = notifier.submit(text, severity=severity, key=key, source=source, groups=chosen or None)
    except ValueError as exc:
        return EXIT_BAD_INPUT, {"outcome": "rejected", "error": _one_line(str(exc))}
    delivery = deliver(notifier, ticket, deadline, progress)
    if delivery.status == "buffered":
        from .alerting.alert import Alert, Severity

        names = notifier.router.group_names(
            Alert(text, Severity.parse(severity), source, groups=tuple(chosen) or None)
        )
        if time.monotonic() + notifier.group_wait > deadline:
            return EXIT_DELIVERED, {
                "outcome": "buffered",
                "reason": f"goes out with the group's SMS after group_wait={notifier.group_wait:g}s "
                "(sent by the next run, or any long-running process on the store)",
            }
        _await_group(notifier, delivery, names, since, deadline)
    return _outcome(delivery)


def _outcome(delivery: Delivery) -> tuple[int, dict[str, Any]]:
    """The exit code and report of one alert's SMS."""
    counts = {
        "sms": delivery.delivered + delivery.failed + delivery.pending,
        "delivered": delivery.delivered,
        "failed": delivery.failed,
        "pending": delivery.pending,
        "throttled": delivery.throttled,
    }
    reason = "; ".join(r for r in delivery.reasons if r)
    if delivery.status == "rejected":
        return EXIT_BAD_INPUT, {"outcome": "rejected", "error": reason, **counts}
    if delivery.status == "suppressed":
        return EXIT_SUPPRESSED, {
            "outcome": "suppressed",
            "reason": "a repeat inside the dedup window; counted for the summary",
            **counts,
        }
    if delivery.status == "throttled":
        return EXIT_THROTTLED, {
            "outcome": "throttled",
            "reason": "held by the per-phone cap; it goes out in a digest",
            **counts,
        }
    if delivery.status == "unrouted":
        return EXIT_BAD_INPUT, {
            "outcome": "unrouted",
            "error": "no route matches this alert, so nobody was paged: pass --to, or add a route",
            **counts,
        }
    if delivery.status == "undecided":
        return EXIT_UNREACHABLE, {"outcome": "unreachable", "error": reason, **counts}
    if delivery.status != "queued":  # "dropped": the notifier closed or its queue was full
        return EXIT_ERROR, {"outcome": "error", "error": reason or delivery.status, **counts}
    if delivery.delivered:
        payload: dict[str, Any] = {"outcome": "delivered", **counts}
        if reason:
            payload["error"] = reason
        return EXIT_DELIVERED, payload
    if delivery.auth_failed:
        return EXIT_AUTH, {"outcome": "auth_failed", "error": reason, **counts}
    if delivery.pending and delivery.rate_limited:
        return EXIT_UNREACHABLE, {
            "outcome": "rate_limited",
            "error": f"{delivery.rate_limited} (waiting in the outbox: the next run sends it)",
            **counts,
        }
    if delivery.pending:
        return EXIT_UNREACHABLE, {
            "outcome": "unreachable",
            "error": f"{reason} (waiting in the outbox: the next run sends it)",
            **counts,
        }
    if delivery.failed:
        return EXIT_BAD_INPUT, {"outcome": "rejected", "error": reason, **counts}
    return EXIT_THROTTLED, {
        "outcome": "throttled",
        "reason": "held by the per-phone cap; it goes out in a digest",
        **counts,
    }


def _finish(code: int, payload: dict[str, Any], as_json: bool) -> NoReturn:
    """The outcome: one line (on stdout when delivered, else on stderr), or one JSON
    object; a ``warning`` is a second line, on stderr."""
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        words = ("outcome", "error", "reason", "warning")
        details = ", ".join(f"{k}={v}" for k, v in payload.items() if k not in words)
        error = payload.get("error") or payload.get("reason")
        line = f"{payload['outcome']}: {error}" if error else f"{payload['outcome']}:"
        if details:
            line += f" ({details})" if error else f" {details}"
        click.echo(line, err=code != EXIT_DELIVERED)
        if payload.get("warning"):
            click.echo(f"warning: {payload['warning']}", err=True)
    sys.exit(code)


# -- segments -------------------------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.argument("text", required=False)
@click.option(
    "--max-segments",
    default=2,
    show_default=True,
    type=click.IntRange(1, 15),
    help="Budget to check against (1-15).",
)
@click.option("--json", "as_json", is_flag=True)
def segments(text: str | None, max_segments: int, as_json: bool) -> None:
    """Show TEXT's encoding, SMS segment count and what a budget would cut.

    \b
    Examples:
      sslsms-notify segments "সার্ভার ডাউন {db1}"
      echo "db1 down" | sslsms-notify segments --max-segments 1
    """
    if text is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise InputError("TEXT is missing (give it as an argument or on standard input)")
        text = _utf8(sys.stdin.buffer.read(), "standard input").rstrip("\n")
        what = "standard input"
    else:
        text = _argument_text(text, "TEXT")
        what = "TEXT"
    if not text.strip():  # as send: nothing to count
        raise InputError(f"{what} is empty")
    info = count_segments(text)
    cut = truncate_to_segments(text, max_segments) if text else text
    report = {
        "encoding": str(info.encoding),
        "sms_type": info.sms_type,
        "characters": info.characters,
        "units": info.units,
        "segments": info.segments,
        "max_segments": max_segments,
        "too_long_for_gateway": info.characters > MAX_SMS_CHARS,
        "truncated": cut != text,
        "kept": cut,
    }
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(
        f"{info.encoding} ({info.sms_type}), {info.characters} characters, "
        f"{info.units} units, {info.segments} SMS"
    )
    if cut != text:
        # what cuts it: the budget, the gateway's limit on characters, or both
        over = [f"over {max_segments} SMS"] if info.segments > max_segments else []
        if info.characters > MAX_SMS_CHARS:
            over.append(f"over the gateway's {MAX_SMS_CHARS}-character limit")
        click.echo(f"{' and '.join(over) or f'over {max_segments} SMS'}; would send: {cut}")


# -- config ---------------------------------------------------------------------------------
@main.group(context_settings=CONTEXT)
def config() -> None:
    """Inspect the configuration."""


@config.command("check", context_settings=CONTEXT)
@_configuration_options
@click.option("--json", "as_json", is_flag=True)
def config_check(url: str | None, config_path: str | None, as_json: bool) -> None:
    """Validate the configuration, check the store answers, print it with every credential masked.

    "store" is the store the CLI uses: the configured one, or, for memory, the
    CLI's SQLite file of this gateway account.

    \b
    Exit codes: 0 valid, 2 invalid (one line: the field, the value and the rule),
    6 the store does not answer (one line; nothing else is printed).

    \b
    Examples:
      sslsms-notify config check --config ./sslsms.toml
      sslsms-notify config check --url "sslsms://SID:TOKEN@01712345678?dedup=600" --json
    """
    if url is not None and config_path is not None:
        raise InputError(BOTH_SOURCES)
    try:
        settings, where = Settings.load_with_source(url, config_path)
    except ValueError as exc:
        click.echo(f"invalid configuration: {_one_line(str(exc))}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    store = _cli_store(settings)
    if settings.store != "memory":  # it must answer before anything is called OK
        from .stores import StoreUnavailableError

        backend = _open_store(settings.store, "store")
        try:
            backend.check()
        except StoreUnavailableError as exc:
            raise Unreachable(str(exc)) from None
        finally:
            backend.close()
    described = settings.describe()
    described["store"] = mask_url(store)
    if store != settings.store:
        described["configured_store"] = settings.store
    if as_json:
        click.echo(json.dumps(described, indent=2, ensure_ascii=False))
        return
    click.echo(f"configuration OK ({where})")
    for name, value in described.items():
        if name == "configured_store":
            continue
        if name == "store" and store != settings.store:
            value = f"{value} (the CLI's file for this account; the configuration says {settings.store})"
        click.echo(f"  {name}: {value}")


# -- emulator and demo ----------------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", default=8025, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option("--tps", type=click.IntRange(min=1), help="Answer 4031 above this many requests per second.")
@click.option("--daily-quota", type=click.IntRange(min=0), help="Answer 4029 after this many requests a day.")
@click.option("--quiet", is_flag=True, help="Do not print accepted SMS.")
def emulator(host: str, port: int, tps: int | None, daily_quota: int | None, quiet: bool) -> None:
    """Run the gateway emulator; print each SMS it accepts.

    \b
    Token: emulator-token-0123456789   SID: EMULATOR
    Inbox: GET http://HOST:PORT/__emulator/messages
    Example:
      sslsms-notify emulator --port 8025 &
      SSLSMS_URL="sslsms://EMULATOR:emulator-token-0123456789@01712345678?base_url=http://127.0.0.1:8025" \\
        sslsms-notify send "hello"
    """
    from .emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorConfig, EmulatorServer, GatewayEmulator

    port = _free_to_listen(host, port)
    gateway = GatewayEmulator(EmulatorConfig(tps_limit=tps, daily_quota=daily_quota))
    if not quiet:
        gateway.subscribe(lambda m: click.echo(m.line()))
    click.echo(f"SSL Push SMS v3 emulator on http://{host}:{port}  (token {DEMO_API_TOKEN}, sid {DEMO_SID})")
    try:
        EmulatorServer(gateway, host=host, port=port).serve_forever()
    except OSError as exc:
        raise InputError(f"--port {port}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _free_to_listen(host: str, port: int) -> int:
    """The port, once we know it can be bound (a port in use is one line, not a traceback)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            return int(probe.getsockname()[1])
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"--port {port}: cannot listen on {host}:{port}: {reason}") from None


# -- serve ----------------------------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.option(
    "--listen",
    envvar="SSLSMS_RELAY_LISTEN",
    metavar="HOST:PORT",
    help="Where to listen (default [relay] listen, else 127.0.0.1:8026: loopback only).",
)
@_configuration_options
@click.option(
    "--store",
    help="The shared store (default: the configured one, else the CLI's SQLite file "
    "of this gateway account).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="What goes to stderr (default [relay] log_level, else info: warnings such as dead "
    "letters, gateway failures and misrouted alerts, plus start and recovery lines).",
)
def serve(
    listen: str | None, url: str | None, config_path: str | None, store: str | None, log_level: str | None
) -> None:
    """Run the relay: an HTTP intake and the pipeline's timers for every producer.

    \b
    Endpoints (all but /healthz need "Authorization: Bearer <token>"):
      POST /v1/alerts          {"text": ..., "severity": ..., "key": ..., "groups": [...]}, or a list
      POST /v1/alertmanager    Prometheus Alertmanager's webhook
      POST /v1/grafana         Grafana's webhook contact point
      GET  /healthz            store and gateway state
      GET  /metrics            Prometheus text format
    Tokens: [relay] tokens in the config file, or SSLSMS_RELAY_TOKENS (comma-separated).
    Summaries, digests, group_wait and retries of every producer on the store fire on
    time here. SIGTERM: finish requests under way, close within [relay]
    shutdown_timeout; what is not delivered stays in the store. Connections: at most
    [relay] max_connections (default: from the file-descriptor limit), closed when
    silent for idle_timeout or when a request takes longer than read_timeout to arrive.

    \b
    Exit codes:
      0  stopped with every SMS delivered
      2  bad configuration (no token, bad [relay] value, address in use)
      6  stopped with SMS undelivered: they wait in the store for the next process

    \b
    Example:
      SSLSMS_RELAY_TOKENS=$(openssl rand -hex 24) sslsms-notify serve --config relay.toml
      (examples/relay/ has a config, an Alertmanager receiver, a Grafana contact point
      and a systemd unit)
    """
    from dataclasses import replace as _replace

    from .config import read_section
    from .relay.server import RelayServer
    from .relay.settings import RelaySettings

    settings, where = _settings(url, config_path)
    try:
        section = read_section(where, "relay") if where not in ("--url", "SSLSMS_URL", "environment") else {}
        relay = RelaySettings.load(section)
        if listen is not None:
            relay = _replace(relay, listen=listen).checked()
        if not relay.tokens:
            raise ValueError(
                "no relay token: set [relay] tokens in the config file or SSLSMS_RELAY_TOKENS "
                "(producers send 'Authorization: Bearer <token>')"
            )
    except (ValueError, ConfigError) as exc:
        raise InputError(str(exc)) from None
    # a daemon's log is its only voice: warnings (dead letters, gateway failures, misrouted
    # alerts, SMS left at shutdown) show at the default level
    _setup_logging(_State.debug, level=(log_level or relay.log_level).lower())
    state = _check(StoreURL(), "--store", store) if store is not None else _cli_store(settings)
    notifier = _notifier(settings, settings.all_groups(), state)
    try:
        server = RelayServer(notifier, relay)
    except ValueError as exc:  # max_connections beyond what RLIMIT_NOFILE allows
        notifier.close(0)
        raise InputError(str(exc)) from None
    try:
        if not relay.loopback:
            click.echo(f"warning: listening on {relay.listen}, beyond this host; put TLS in front", err=True)
        click.echo(f"relay on http://{relay.listen}, store {mask_url(state)}", err=True)
        delivered = server.serve_forever()
    except OSError as exc:
        notifier.close(0)
        raise InputError(str(exc)) from None
    sys.exit(0 if delivered else EXIT_UNREACHABLE)


@main.command(context_settings=CONTEXT)
def demo() -> None:
    """Replay an incident through the logging handler on the embedded emulator.

    No account and no network: shows what each on-call phone would receive.
    """
    from .demo import run_demo

    run_demo(click.echo)


# -- outbox ---------------------------------------------------------------------------------
@main.group(context_settings=CONTEXT)
def outbox() -> None:
    """Inspect, retry or purge the durable outbox.

    Without --store: the configured store, else the CLI's SQLite file of the gateway
    account the configuration names (--url, --config, SSLSMS_URL...).

    \b
    Exit codes: 0 done, 2 bad input (a bad --store, unknown ids, no account to
    find the state file by), 6 the store does not answer.
    """


def _no_account() -> InputError:
    """No configuration: which account's state file is unknown; say which ones exist."""
    try:
        files = state_files()
        legacy = legacy_state_path()
    except ConfigError:
        files, legacy = [], None
    shown = [
        f"sqlite:///{f}" + (" (the old file every account shared)" if f == legacy else "") for f in files
    ]
    found = f"state files: {', '.join(shown)}" if shown else "no state files exist yet"
    return InputError(
        "no configuration: the CLI keeps one state file per gateway account; name the account "
        f"with --url or --config (or SSLSMS_URL), or pass --store ({found})"
    )


def _store_spec(store: str | None, url: str | None, config_path: str | None) -> str:
    """--store, else the configured store, else the CLI's SQLite file of this account."""
    if store is not None:
        return str(_check(StoreURL(), "--store", store))
    if url is not None and config_path is not None:
        raise InputError(BOTH_SOURCES)
    try:
        settings = Settings.load(url, config_path)
    except NoConfiguration:
        raise _no_account() from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return _cli_store(settings)


def _store(store: str | None, url: str | None, config_path: str | None) -> Any:
    """The store to work on (:func:`_store_spec`); it must answer before anything is
    listed or changed."""
    from .stores import StoreUnavailableError

    spec = _store_spec(store, url, config_path)
    backend = _open_store(spec, "--store")
    try:
        backend.check()
    except StoreUnavailableError as exc:
        backend.close()
        raise Unreachable(str(exc)) from None
    return backend


_store_options = [
    click.option(
        "--store",
        help="Store URL (default: the configured one, else the CLI's SQLite file of the "
        "gateway account the configuration names).",
    ),
    click.option(
        "--url",
        help="sslsms:// URL naming the account (default: the config file, else SSLSMS_URL). "
        "Not with --config.",
    ),
    click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file. Not with --url."
    ),
]


def _with_store(func: Any) -> Any:
    for option in reversed(_store_options):
        func = option(func)
    return func


@outbox.command("list", context_settings=CONTEXT)
@_with_store
@click.option("--state", type=click.Choice(["pending", "inflight", "dead"]), help="Only this state.")
@click.option("--json", "as_json", is_flag=True)
def outbox_list(
    store: str | None, url: str | None, config_path: str | None, state: str | None, as_json: bool
) -> None:
    """List SMS waiting or given up on.

    \b
    Example:  sslsms-notify outbox list --state dead --json
    """
    from .stores.base import OutboxState

    backend = _store(store, url, config_path)
    try:
        items = backend.outbox_list(OutboxState(state) if state else None)
        counts = backend.outbox_counts()
    finally:
        backend.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "csms_id": i.csms_id,
                        "msisdn": i.msisdn,
                        "text": i.text,
                        "state": str(i.state),
                        "attempts": i.attempts,
                        "last_error": i.last_error,
                    }
                    for i in items
                ],
                ensure_ascii=False,
            )
        )
        return
    for item in items:
        click.echo(
            f"{item.csms_id}  {item.state:<8} +{item.msisdn}  tries={item.attempts}  "
            f"{item.text[:60]!r}  {item.last_error}"
        )
    # OutboxCounts.pending counts the SMS in flight too: every SMS still to send
    click.echo(f"{counts.pending} waiting ({counts.inflight} in flight), {counts.dead} dead")
    if store is None:
        _mention_legacy_state()


def _mention_legacy_state() -> None:
    """The one state file every account shared before: kept, and named, never used by default."""
    try:
        legacy = legacy_state_path()
        exists = legacy.is_file()
    except (ConfigError, OSError):
        return
    if exists:
        click.echo(
            f"note: {legacy} is the state file every account shared before state files were "
            f"per account; SMS left there: --store sqlite:///{legacy}",
            err=True,
        )


@outbox.command("retry", context_settings=CONTEXT)
@_with_store
@click.argument("csms_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Every dead letter.")
def outbox_retry(
    store: str | None,
    url: str | None,
    config_path: str | None,
    csms_ids: tuple[str, ...],
    retry_all: bool,
) -> None:
    """Put dead letters back in the queue (same csms_id: never sent twice).

    \b
    Examples:
      sslsms-notify outbox retry 0Pq7xYz1AbCdEfGhIjKl
      sslsms-notify outbox retry --all
    """
    from .stores.base import OutboxState

    if not csms_ids and not retry_all:
        raise click.UsageError("name CSMS_IDS or pass --all")
    backend = _store(store, url, config_path)
    try:
        ids = list(dict.fromkeys(csms_ids))
        if ids:
            found = backend.outbox_get(ids)
            unknown = [i for i in ids if i not in found or found[i].state is not OutboxState.DEAD]
            if unknown:
                raise InputError(f"not dead letters in this outbox: {', '.join(unknown)}")
        if retry_all:
            ids += [i.csms_id for i in backend.outbox_list(OutboxState.DEAD, limit=1_000_000)]
        requeued = backend.outbox_requeue(ids)
        click.echo(
            f"{requeued} requeued; the next run (sslsms-notify send, or a relay on this store) sends them"
            if requeued
            else "0 requeued"
        )
    finally:
        backend.close()


@outbox.command("purge", context_settings=CONTEXT)
@_with_store
@click.option("--state", type=click.Choice(["dead", "pending"]), default="dead", show_default=True)
@click.option("--yes", is_flag=True, help="Do not ask.")
def outbox_purge(store: str | None, url: str | None, config_path: str | None, state: str, yes: bool) -> None:
    """Delete SMS in a state (dead letters by default).

    Asks first on a terminal; without one (a pipe, cron), it refuses unless --yes.

    \b
    Example:  sslsms-notify outbox purge --yes
    """
    from .stores.base import OutboxState

    if not yes and (sys.stdin is None or not sys.stdin.isatty()):
        raise InputError("refusing to purge without --yes (standard input is not a terminal)")
    backend = _store(store, url, config_path)
    try:
        if not yes:
            click.confirm(f"Delete every {state} SMS?", abort=True)
        click.echo(f"{backend.outbox_purge(OutboxState(state))} purged")
    finally:
        backend.close()


# -- apprise --------------------------------------------------------------------------------
@main.group("apprise", context_settings=CONTEXT)
def apprise_group() -> None:
    """Use sslsms:// from the apprise CLI and apprise config files."""


@apprise_group.command("install", context_settings=CONTEXT)
@click.option(
    "--path",
    "plugin_dir",
    type=click.Path(file_okay=False),
    default="~/.config/apprise/plugins",
    show_default=True,
    help="An apprise plugin path.",
)
def apprise_install(plugin_dir: str) -> None:
    """Write a one-line loader so the apprise CLI knows sslsms://.

    From the apprise CLI, sslsms:// URLs without store= keep their state in the same
    SQLite file as `sslsms-notify send`, so dedup and caps hold across invocations.

    \b
    Example:
      sslsms-notify apprise install
      apprise -b "db1 down" "sslsms://SID:TOKEN@01712345678"
    """
    from .integrations.apprise import LOADER

    try:
        target = Path(plugin_dir).expanduser() / "sslsms.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(LOADER, encoding="utf-8")
    except (OSError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"--path {plugin_dir!r}: cannot write the loader: {reason}") from None
    click.echo(f"installed {target}")


if __name__ == "__main__":
    main()
