"""Input checks every command shares: each refused where it enters, in one line naming it.

Text (an argument or standard input, which must be UTF-8), phone numbers (``--to``,
``--to-file``), groups, the configuration (``--url`` / ``--config``), the store and
the pipeline on it, and the alert ``send`` takes (:class:`AlertArguments`: checked
once, whether the alert then goes to the gateway or to a relay).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import (
    ConfigError,
    NoConfiguration,
    Settings,
    default_state_url,
    legacy_state_path,
    looks_like_number,
    mask_url,
    state_files,
)
from ..extras import install_hint
from ..gateway.clean import clean_text
from ..gateway.msisdn import InvalidMsisdnError, normalize_msisdn
from ..severity import SEVERITY_ALIASES
from ..validation import Number, StoreURL, Text
from .common import InputError, Unreachable, one_line

if TYPE_CHECKING:
    from ..alerting.notifier import Notifier
    from ..stores.base import Store

TIMEOUT = Number(0, 3600, low_open=True, unit="seconds")
KEY = Text("a key", min_length=1, max_length=200)
SOURCE = Text("a name", max_length=100)

#: ``--url`` with ``--config``: refused (the URL is a whole configuration of its own)
BOTH_SOURCES = (
    "--url and --config cannot be used together: --url is the whole configuration "
    "(put the URL in the file as url = ..., or keep the token in SSLSMS_URL)"
)


def check(rule: Any, label: str, value: Any) -> Any:
    """``value`` through a :mod:`~sslsms_notify.validation` rule, or one line (exit 2)."""
    try:
        return rule.check(label, value, text=True)
    except ValueError as exc:
        raise InputError(str(exc)) from None


# -- the configuration and the store --------------------------------------------------------
def configuration_options(func: Any) -> Any:
    """``--url`` and ``--config``, the same on every command that reads the configuration."""
    func = click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file. Not with --url."
    )(func)
    return click.option(
        "--url", help="sslsms:// URL (default: the config file, else SSLSMS_URL). Not with --config."
    )(func)


def load_settings(url: str | None, config: str | None) -> tuple[Settings, str]:
    """The configuration and where it came from; a bad one is one line (exit 2)."""
    if url is not None and config is not None:
        raise InputError(BOTH_SOURCES)
    try:
        return Settings.load_with_source(url, config)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def cli_store(settings: Settings) -> str:
    """The configured store; a memory store would forget everything between runs, so
    the CLI uses its own SQLite file instead: one per gateway account (SID and base
    URL), shared with the apprise CLI plugin, so two accounts never share an outbox."""
    if settings.store != "memory":
        return settings.store
    try:
        return default_state_url(settings.sid, settings.base_url)
    except ConfigError as exc:
        raise InputError(str(exc)) from None


def chosen_store(store: str | None, settings: Settings) -> str:
    """``--store``, checked, else :func:`cli_store`."""
    return str(check(StoreURL(), "--store", store)) if store is not None else cli_store(settings)


def open_store(spec: str, label: str, *, replica_wait: float | None = None) -> Store:
    """A store, or one line saying why not (exit 2: it is configuration)."""
    from ..stores import StoreUnavailableError
    from ..stores import open_store as open_backend

    try:
        backend: Store = open_backend(spec, replica_wait=replica_wait)
    except ImportError as exc:
        # the Redis store re-raises the missing import with its own message (no .name)
        package = exc.name or getattr(exc.__cause__, "name", None) or "redis"
        raise InputError(
            f"{label}={mask_url(spec)!r}: needs the '{package}' package: {install_hint('redis')}"
        ) from None
    except (StoreUnavailableError, ValueError) as exc:
        raise InputError(f"{one_line(str(exc))} (pass another --store, or set XDG_STATE_HOME)") from None
    return backend


def open_notifier(settings: Settings, groups: Mapping[str, Sequence[str]], state: str) -> Notifier:
    """The pipeline on the store ``state`` (``send``, ``serve``); a bad one is one line (exit 2)."""
    backend = open_store(state, "--store", replica_wait=settings.replica_wait)
    try:
        notifier: Notifier = settings.notifier(groups=dict(groups), store=backend, close_at_exit=None)
    except ValueError as exc:
        backend.close()
        raise InputError(str(exc)) from None
    return notifier


def no_account() -> InputError:
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


def store_spec(store: str | None, url: str | None, config_path: str | None) -> str:
    """--store, else the configured store, else the CLI's SQLite file of this account."""
    if store is not None:
        return str(check(StoreURL(), "--store", store))
    if url is not None and config_path is not None:
        raise InputError(BOTH_SOURCES)
    try:
        settings = Settings.load(url, config_path)
    except NoConfiguration:
        raise no_account() from None
    except ValueError as exc:
        raise InputError(str(exc)) from None
    return cli_store(settings)


def answering_store(store: str | None, url: str | None, config_path: str | None) -> Store:
    """The store to work on (:func:`store_spec`); it must answer before anything is
    listed or changed (else one line, exit 6)."""
    from ..stores import StoreUnavailableError

    backend = open_store(store_spec(store, url, config_path), "--store")
    try:
        backend.check()
    except StoreUnavailableError as exc:
        backend.close()
        raise Unreachable(str(exc)) from None
    return backend


# -- text -----------------------------------------------------------------------------------
def utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def argument_text(text: str, what: str) -> str:
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


def stdin_text() -> str:
    """Standard input, which must not be a terminal (a missing TEXT would hang there)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError("TEXT is missing (give it as an argument or on standard input)")
    return utf8(sys.stdin.buffer.read(), "standard input")


def read_text(text: str | None) -> str:
    """TEXT, or standard input: stripped, and something left to send once cleaned."""
    if text is None:
        try:
            text = stdin_text()
        except OSError as exc:
            raise InputError(f"cannot read standard input: {exc.strerror or exc}") from None
        what = "standard input"
    else:
        text = argument_text(text, "TEXT")
        what = "TEXT"
    text = text.strip()
    if not text:
        raise InputError(f"{what} is empty")
    if not clean_text(text).strip():
        raise InputError(f"{what} has nothing to send once control characters are removed")
    return text


# -- recipients -----------------------------------------------------------------------------
def numbers_file(path: str) -> list[str]:
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
        numbers.append(phone_number(entry, f"--to-file line {number}:"))
    if not numbers:
        raise InputError(f"{label} holds no numbers (only blank lines and # comments)")
    return numbers


def phone_number(raw: str, label: str) -> str:
    try:
        return normalize_msisdn(raw, field=label)
    except InvalidMsisdnError as exc:
        raise InputError(str(exc)) from None


def targets(groups: Mapping[str, Any] | None, to: Sequence[str], to_file: str | None) -> list[str]:
    """``--to`` values (comma lists allowed) and ``--to-file`` numbers. A target shaped
    like a number (digits, +, spaces, dashes, dots, parentheses) is a number and gets
    the number rule; anything else is a group name, checked against ``groups`` (None:
    not here; a relay knows its own groups)."""
    chosen: list[str] = []
    for value in to:
        value = argument_text(value, "--to")
        parts = [p for p in value.split(",") if p.strip()] if value.strip() else [value]
        for part in parts:
            target = part.strip()
            if not target:
                raise InputError(f"--to {part!r}: give a phone number or a group name")
            if looks_like_number(target):
                chosen.append(phone_number(target, "--to"))
            elif groups is None or target in groups:
                chosen.append(target)
            else:
                known = f"groups: {', '.join(sorted(groups))}" if groups else "no groups are configured"
                raise InputError(f"--to {target!r}: no such group ({known})")
    if to_file is not None:
        chosen += numbers_file(to_file)
    return list(dict.fromkeys(chosen))


# -- the alert send takes -------------------------------------------------------------------
def severity_option(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--severity``: a name or an alias the relay API takes too, in any case; normalised."""
    value = value.lower()
    return SEVERITY_ALIASES.get(value, value)


@dataclass(frozen=True)
class AlertOptions:
    """``--timeout``, ``--key`` and ``--source``, checked."""

    wait: float
    key: str | None
    source: str


@dataclass(frozen=True)
class AlertArguments:
    """The alert ``send`` takes, as typed; checked once, for the gateway or a relay alike.

    The checks run in the order a user fixes them: first the options
    (:meth:`options`), then, once the caller knows where the alert goes (the
    configured groups, or a relay that knows its own), the recipients and the text
    (:meth:`recipients_and_text`; standard input is read last).
    """

    text: str | None
    targets: tuple[str, ...]
    to_file: str | None
    severity: str
    key: str | None
    source: str
    timeout: str

    def options(self) -> AlertOptions:
        wait = float(check(TIMEOUT, "--timeout", self.timeout))
        key = self.key
        if key is not None:
            key = str(check(KEY, "--key", argument_text(key, "--key")))
        source = str(check(SOURCE, "--source", argument_text(self.source, "--source")))
        return AlertOptions(wait, key, source)

    def recipients_and_text(self, groups: Mapping[str, Any] | None) -> tuple[list[str], str]:
        """``--to`` / ``--to-file`` against ``groups`` (None: a relay's, unknown here; a
        configuration without groups then needs a recipient), then TEXT."""
        chosen = targets(groups, self.targets, self.to_file)
        if groups is not None and not chosen and not groups:
            raise InputError(
                "no recipients: pass --to NUMBER|GROUP or --to-file FILE, or put numbers in the URL "
                "(sslsms://SID:TOKEN@01712345678)"
            )
        return chosen, read_text(self.text)
