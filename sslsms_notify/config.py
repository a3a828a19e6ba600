"""One configuration for every door: an ``sslsms://`` URL, a TOML file, the environment, or keywords.

    sslsms://{sid}:{api_token}@{msisdn}/{msisdn}/...?base_url=...&dedup=300&tps=10

Every setting is declared once, in :data:`SETTINGS`: its :class:`Settings` field, its
URL argument, its TOML key, its environment variable, its default, a one-line doc and
the rule its values must follow. Parsing (:meth:`Settings.from_url`,
:meth:`Settings.from_toml`, :meth:`Settings.load`), checking
(:meth:`Settings.validated`), printing (:meth:`Settings.url`,
:meth:`Settings.describe`) and the configuration reference (:func:`reference_rows`)
all read that one table, so a new setting is one new row.

A bad value is refused where it enters, in one line that names the field as the
user wrote it, the value and the rule: ``cap_period='0': must be a number of seconds
greater than 0 and at most 2592000 (30 days)``, ``config.toml: pipeline.dedup_window='five':
...``. Credentials are never shown (:func:`mask_url`).

URL arguments (all optional; see :func:`reference_rows` for the full table):
  base_url      gateway address (default https://smsplus.sslwireless.com)
  dedup         dedup window in seconds (0: off)          repeat    summary interval while repeats go on
  group_wait    seconds to gather alerts into one SMS     tps       requests per second to the gateway
  cap           SMS per phone per cap_period (0: no cap)  cap_period seconds (default 3600)
  segments      SMS segments per message (default 2)      store     memory | sqlite:///path | redis://...
  level         minimum logging level for SMSHandler      timeout   HTTP timeout in seconds
  queue_size, max_windows, max_pending, dead_retention: the pipeline's bounds
  to: more numbers, comma-separated
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .gateway.client import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, MAX_SID_LENGTH, MAX_TOKEN_LENGTH, GatewayClient
from .gateway.msisdn import InvalidMsisdnError, normalize_msisdn
from .paths import state_dir
from .validation import (
    MASK,
    HttpURL,
    InvalidValue,
    Level,
    Number,
    StoreURL,
    Text,
    fail,
    mask_credentials,
    shown,
)

SCHEME = "sslsms"
DEFAULT_CONFIG_PATH = Path("~/.config/sslsms-notify/config.toml")
DAY = 86400.0
MONTH = 30 * DAY


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and why, in one line."""


class NoConfiguration(ConfigError):
    """No URL, no config file and no ``SSLSMS_*`` variables: nothing to read at all."""


def mask_url(text: str) -> str:
    """Any text with URLs in it, every credential replaced by ``****`` (token, passwords)."""
    return mask_credentials(text)


#: the one state file every account shared before state files were per account: kept,
#: never deleted, never used by default
LEGACY_STATE_NAME = "state.db"


def account_id(sid: str, base_url: str) -> str:
    """The gateway account's identity in file names: the first 12 hex digits of
    ``sha256(sid + "\\0" + base_url)`` (the token is not part of it: a new token for
    the same account keeps its state; no secret goes into a file name)."""
    identity = f"{sid.strip()}\0{base_url.strip().rstrip('/')}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:12]


def _state_dir() -> Path:
    try:
        return state_dir()
    except RuntimeError:  # no HOME and no passwd entry
        raise ConfigError(
            "cannot find a home directory for the default state file: set XDG_STATE_HOME or pass a store"
        ) from None


def default_state_path(sid: str, base_url: str) -> Path:
    """The SQLite file the command line tools use for one gateway account.

    ``$XDG_STATE_HOME/sslsms-notify/state-<account>.db`` (default ``~/.local/state``),
    where ``<account>`` is :func:`account_id` of the SID and the base URL: two accounts
    never share an outbox, so an SMS left by one is never sent through the other.
    Used by ``sslsms-notify send``, ``serve`` and ``outbox``, and by the apprise plugin
    run from the ``apprise`` CLI, so dedup windows and caps of one account hold across
    their invocations.
    """
    return _state_dir() / f"state-{account_id(sid, base_url)}.db"


def default_state_url(sid: str, base_url: str) -> str:
    """:func:`default_state_path` as a store URL."""
    return f"sqlite:///{default_state_path(sid, base_url)}"


def legacy_state_path() -> Path:
    """``$XDG_STATE_HOME/sslsms-notify/state.db``: the one file every account shared
    before the state became per account. Never used by default, never deleted."""
    return _state_dir() / LEGACY_STATE_NAME


def state_files() -> list[Path]:
    """The CLI's state files in the state directory (per-account ones, then the legacy one)."""
    try:
        directory = _state_dir()
        found = sorted(directory.glob("state-*.db"))
        legacy = directory / LEGACY_STATE_NAME
        return [*found, legacy] if legacy.is_file() else found
    except (OSError, ConfigError):  # no directory to look in: no state files
        return []


# -- rules that are not plain values -------------------------------------------------
_NUMBER_CHARS = frozenset("+-.() ")


def looks_like_number(target: str) -> bool:
    """A target made only of digits, ``+``, spaces, dashes, dots and parentheses is a
    phone number; anything else is a group name (so a typo in a number gets the number
    rule, not "no such group")."""
    stripped = target.strip()
    return (
        bool(stripped)
        and any(c.isdigit() for c in stripped)
        and all(c.isdigit() or c in _NUMBER_CHARS for c in stripped)
    )


@dataclass(frozen=True)
class Numbers:
    """Phone numbers: a list, or one string of comma-separated numbers."""

    rule: str = "must be a list of phone numbers (or one string of comma-separated numbers)"

    def check(self, label: str, value: Any, *, text: bool = False) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [n for n in value.split(",") if n.strip()]
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            fail(label, value, self.rule)
        numbers = [normalize_msisdn(n, field=f"{label}[{i}]") for i, n in enumerate(value)]
        return tuple(dict.fromkeys(numbers))


@dataclass(frozen=True)
class Groups:
    """``{name: numbers}``; a name must not look like a phone number."""

    rule: str = 'must be a table of group names to lists of numbers, e.g. oncall = ["01712345678"]'

    def check(self, label: str, value: Any, *, text: bool = False) -> dict[str, tuple[str, ...]]:
        if not isinstance(value, Mapping):
            fail(label, value, self.rule)
        groups: dict[str, tuple[str, ...]] = {}
        for name, numbers in value.items():
            where = f"{label}.{name}"
            if not isinstance(name, str) or not name.strip() or "," in name:
                fail(label, name, "group names must be non-empty and hold no comma")
            if looks_like_number(name):
                fail(where, name, "a group name must not look like a phone number (use letters, e.g. oncall)")
            if not isinstance(numbers, list | tuple | str):
                fail(where, numbers, 'must be a list of phone numbers, e.g. ["01712345678"]')
            normalized = Numbers().check(where, numbers)
            if not normalized:
                fail(where, numbers, "must list at least one phone number")
            groups[name.strip()] = normalized
        return groups


_ROUTE_KEYS = {"groups", "min_severity", "sources", "tags", "stop"}


@dataclass(frozen=True)
class Routes:
    """``[[routes]]``: which groups get which alerts (see :class:`~.alerting.routing.Route`)."""

    rule: str = (
        'must be a list of tables like {groups = ["oncall"], min_severity = "error", '
        'sources = ["app.db"], tags = ["db"], stop = false}'
    )

    def check(self, label: str, value: Any, *, text: bool = False) -> tuple[dict[str, Any], ...]:
        from .alerting.routing import Route

        if not isinstance(value, list | tuple):
            fail(label, value, self.rule)
        routes = []
        for index, spec in enumerate(value):
            where = f"{label}[{index}]"
            if not isinstance(spec, Mapping):
                fail(where, spec, self.rule)
            unknown = sorted(str(k) for k in set(spec) - _ROUTE_KEYS)
            if unknown:
                raise InvalidValue(
                    where,
                    None,
                    f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_ROUTE_KEYS))})",
                )
            for key in ("groups", "sources", "tags"):
                names = spec.get(key)
                if names is not None and not (
                    isinstance(names, str)
                    or (isinstance(names, list | tuple) and all(isinstance(n, str) for n in names))
                ):
                    fail(f"{where}.{key}", names, "must be a list of names")
            if "stop" in spec and not isinstance(spec["stop"], bool):
                fail(f"{where}.stop", spec["stop"], "must be true or false")
            severity = spec.get("min_severity")
            if severity is not None and not isinstance(severity, str | int):
                fail(f"{where}.min_severity", severity, "must be a severity name like error or critical")
            try:
                Route.parse(spec)
            except ValueError as exc:
                raise InvalidValue(where, None, str(exc)) from None
            routes.append(dict(spec))
        return tuple(routes)


# -- the registry -----------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One setting, wherever it is given."""

    #: the :class:`Settings` field (and the Notifier or client keyword)
    name: str
    #: the ``sslsms://`` URL argument, or None (credentials live in the URL's userinfo)
    url_arg: str | None
    #: ``section.key`` in the TOML file ("" for a top-level table)
    toml: str
    #: environment variable read when no URL and no file are given
    env: str | None
    default: Any
    doc: str
    rule: Any
    #: never shown: not in reprs, URLs printed in privacy mode, or error messages
    secret: bool = False
    #: 0 from a user means "off", stored as None (the per-phone cap)
    zero_is_none: bool = False
    #: None is a valid value (meaning "the default behaviour", e.g. repeat = dedup window)
    optional: bool = False
    #: a URL that may hold credentials of its own (masked when printed)
    holds_url: bool = False
    #: how the default reads in the reference, when repr() says it badly
    default_text: str | None = None

    def check(self, label: str, value: Any, *, text: bool = False) -> Any:
        """``value`` as this setting stores it, or :class:`InvalidValue` naming ``label``."""
        if value is None and (self.optional or self.zero_is_none):
            return None
        checked = self.rule.check(label, value, text=text)
        if self.zero_is_none and checked == 0:
            return None
        return checked

    @property
    def section(self) -> str:
        return self.toml.partition(".")[0] if "." in self.toml else ""

    @property
    def key(self) -> str:
        return self.toml.rpartition(".")[2]


_SECONDS_OFF = "0 turns it off"

SETTINGS: tuple[Setting, ...] = (
    Setting(
        name="api_token",
        url_arg=None,
        toml="gateway.api_token",
        env="SSLSMS_API_TOKEN",
        default="",
        doc="API token of the SSL Wireless account (URL: sslsms://SID:API_TOKEN@...)",
        rule=Text("a token", min_length=1, max_length=MAX_TOKEN_LENGTH, no_spaces=True, secret=True),
        secret=True,
        default_text="(required)",
    ),
    Setting(
        name="sid",
        url_arg=None,
        toml="gateway.sid",
        env="SSLSMS_SID",
        default="",
        doc="sender ID (SID) of the account (URL: sslsms://SID:API_TOKEN@...)",
        rule=Text("a sender id", min_length=1, max_length=MAX_SID_LENGTH, no_spaces=True),
        default_text="(required)",
    ),
    Setting(
        name="recipients",
        url_arg="to",
        toml="pipeline.recipients",
        env="SSLSMS_TO",
        default=(),
        doc="phone numbers of the 'default' group (URL: the path, sslsms://...@NUMBER/NUMBER, or to=)",
        rule=Numbers(),
        default_text="(none)",
    ),
    Setting(
        name="groups",
        url_arg=None,
        toml="groups",
        env=None,
        default={},
        doc="named groups of numbers ([groups] oncall = [...]); --to and routes name them",
        rule=Groups(),
        default_text="(none)",
    ),
    Setting(
        name="routes",
        url_arg=None,
        toml="routes",
        env=None,
        default=(),
        doc="[[routes]]: which groups get an alert, by min_severity, sources (logger prefixes) and tags",
        rule=Routes(),
        default_text="(none: the 'default' group, else the first group)",
    ),
    Setting(
        name="base_url",
        url_arg="base_url",
        toml="gateway.base_url",
        env="SSLSMS_BASE_URL",
        default=DEFAULT_BASE_URL,
        doc="address of the gateway (the emulator's, for tests)",
        rule=HttpURL(),
        holds_url=True,
    ),
    Setting(
        name="timeout",
        url_arg="timeout",
        toml="gateway.timeout",
        env=None,
        default=DEFAULT_TIMEOUT,
        doc="seconds an HTTP request to the gateway may take",
        rule=Number(0, 300, low_open=True, unit="seconds"),
    ),
    Setting(
        name="dedup_window",
        url_arg="dedup",
        toml="pipeline.dedup_window",
        env=None,
        default=300.0,
        doc="seconds an alert's repeats are held back and counted",
        rule=Number(0, MONTH, unit="seconds", note=_SECONDS_OFF),
    ),
    Setting(
        name="repeat_interval",
        url_arg="repeat",
        toml="pipeline.repeat_interval",
        env=None,
        default=None,
        doc="while repeats go on, one summary SMS per this many seconds",
        rule=Number(0, MONTH, low_open=True, unit="seconds"),
        optional=True,
        default_text="the dedup window",
    ),
    Setting(
        name="remind_every",
        url_arg="remind",
        toml="pipeline.remind_every",
        env=None,
        default=0.0,
        doc="a webhook alert still firing that Alertmanager or Grafana sends again this many seconds "
        "after it paged pages a reminder; by default a re-send is nothing new",
        rule=Number(0, MONTH, unit="seconds", note=_SECONDS_OFF),
    ),
    Setting(
        name="group_wait",
        url_arg="group_wait",
        toml="pipeline.group_wait",
        env=None,
        default=0.0,
        doc="seconds to gather distinct alerts for a group into one SMS",
        rule=Number(0, DAY, unit="seconds", note=_SECONDS_OFF),
    ),
    Setting(
        name="tps",
        url_arg="tps",
        toml="pipeline.tps",
        env=None,
        default=10.0,
        doc="requests per second to the gateway (your account's TPS), shared through the store",
        rule=Number(0, 10_000, low_open=True),
    ),
    Setting(
        name="per_recipient_limit",
        url_arg="cap",
        toml="pipeline.per_recipient_limit",
        env=None,
        default=10,
        doc="SMS per phone per cap_period; the overflow is folded into a digest",
        rule=Number(0, 1_000_000, whole=True, note="0 means no cap"),
        zero_is_none=True,
    ),
    Setting(
        name="per_recipient_period",
        url_arg="cap_period",
        toml="pipeline.per_recipient_period",
        env=None,
        default=3600.0,
        doc="the period of the per-phone cap, in seconds",
        rule=Number(0, MONTH, low_open=True, unit="seconds"),
    ),
    Setting(
        name="max_segments",
        url_arg="segments",
        toml="pipeline.max_segments",
        env=None,
        default=2,
        doc="SMS parts a message may use (longer texts are cut; 1000 characters = 15 UCS-2 parts)",
        rule=Number(1, 15, whole=True),
    ),
    Setting(
        name="store",
        url_arg="store",
        toml="pipeline.store",
        env=None,
        default="memory",
        doc="where dedup windows, caps and the outbox live (the CLI uses a SQLite file instead of memory)",
        rule=StoreURL(),
        holds_url=True,
    ),
    Setting(
        name="level",
        url_arg="level",
        toml="pipeline.level",
        env=None,
        default="ERROR",
        doc="lowest logging level SMSHandler sends",
        rule=Level(),
    ),
    Setting(
        name="queue_size",
        url_arg="queue_size",
        toml="pipeline.queue_size",
        env=None,
        default=50_000,
        doc="distinct alerts waiting for the pipeline's worker; more are dropped and counted",
        rule=Number(1, 10_000_000, whole=True),
    ),
    Setting(
        name="max_windows",
        url_arg="max_windows",
        toml="pipeline.max_windows",
        env=None,
        default=100_000,
        doc="dedup windows kept; beyond it the ones ending first close early",
        rule=Number(1, 10_000_000, whole=True),
    ),
    Setting(
        name="max_pending",
        url_arg="max_pending",
        toml="pipeline.max_pending",
        env=None,
        default=10_000,
        doc="SMS waiting in the outbox; beyond it the oldest become dead letters",
        rule=Number(1, 10_000_000, whole=True),
    ),
    Setting(
        name="dead_retention",
        url_arg="dead_retention",
        toml="pipeline.dead_retention",
        env=None,
        default=7 * 86400.0,
        default_text="604800 (7 days)",
        doc="seconds a dead letter is kept for `outbox list` and `outbox retry`, then forgotten",
        rule=Number(60, 365 * 86400),
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
BY_URL_ARG: dict[str, Setting] = {s.url_arg: s for s in SETTINGS if s.url_arg}
#: the URL arguments, for integrations that forward them (apprise)
URL_ARGS: tuple[str, ...] = tuple(BY_URL_ARG)
_TOML_SECTIONS = ("gateway", "pipeline")
_TOML_TABLES = {s.toml: s for s in SETTINGS if not s.section}  # groups, routes
#: tables other parts read themselves: [relay] (sslsms_notify.relay.settings)
_OTHER_TABLES = ("relay",)
_BY_TOML = {s.toml: s for s in SETTINGS if s.section}

#: Settings fields that are Notifier options of the same name
PIPELINE_FIELDS = (
    "store",
    "dedup_window",
    "repeat_interval",
    "remind_every",
    "group_wait",
    "tps",
    "per_recipient_limit",
    "per_recipient_period",
    "max_segments",
    "queue_size",
    "max_windows",
    "max_pending",
    "dead_retention",
)


def _default(name: str) -> Any:
    value = BY_NAME[name].default
    return field(default_factory=dict) if isinstance(value, dict) else value


@dataclass(frozen=True)
class Settings:
    """The effective configuration. Build it with :meth:`from_url`, :meth:`from_toml`,
    :meth:`load`, or keywords followed by :meth:`validated`."""

    api_token: str = field(default=BY_NAME["api_token"].default, repr=False)
    sid: str = BY_NAME["sid"].default
    recipients: tuple[str, ...] = BY_NAME["recipients"].default
    groups: Mapping[str, tuple[str, ...]] = _default("groups")
    routes: tuple[Mapping[str, Any], ...] = BY_NAME["routes"].default
    base_url: str = BY_NAME["base_url"].default
    timeout: float = BY_NAME["timeout"].default
    dedup_window: float = BY_NAME["dedup_window"].default
    repeat_interval: float | None = BY_NAME["repeat_interval"].default
    remind_every: float = BY_NAME["remind_every"].default
    group_wait: float = BY_NAME["group_wait"].default
    tps: float = BY_NAME["tps"].default
    per_recipient_limit: int | None = BY_NAME["per_recipient_limit"].default
    per_recipient_period: float = BY_NAME["per_recipient_period"].default
    max_segments: int = BY_NAME["max_segments"].default
    store: str = BY_NAME["store"].default
    level: str | int = BY_NAME["level"].default
    queue_size: int = BY_NAME["queue_size"].default
    max_windows: int = BY_NAME["max_windows"].default
    max_pending: int = BY_NAME["max_pending"].default
    dead_retention: float = BY_NAME["dead_retention"].default

    def __repr__(self) -> str:
        return f"Settings({self.masked_url()!r})"

    # -- sources -------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str) -> Settings:
        """Parse and check an ``sslsms://`` URL; a ValueError names the bad part."""
        return cls._from_url(url).validated()

    @classmethod
    def _from_url(cls, url: Any) -> Settings:
        if not isinstance(url, str):
            fail("url", url, f"must be an {SCHEME}:// URL string")
        text = url.strip()
        if any(c.isspace() for c in text):
            raise ConfigError("URL must not contain spaces (percent-encode them as %20)")
        try:
            parts = urlsplit(text)
        except ValueError as exc:
            raise ConfigError(f"URL {mask_url(text)!r} is not a valid URL: {exc}") from None
        if parts.scheme != SCHEME:
            raise ConfigError(
                f"URL must start with {SCHEME}://SID:API_TOKEN@NUMBER, not {parts.scheme or 'no scheme'}://"
            )
        if parts.fragment or text.endswith("#"):
            raise ConfigError("URL must not contain '#' (percent-encode it as %23)")
        userinfo, at, host = parts.netloc.rpartition("@")
        sid, colon, token = userinfo.partition(":")
        if not at or not sid:
            raise ConfigError(f"URL must start with {SCHEME}://SID:API_TOKEN@ (the SID is missing)")
        if not colon or not token:
            raise ConfigError(f"URL must start with {SCHEME}://SID:API_TOKEN@ (the API token is missing)")
        numbers = [unquote(n) for n in [host, *parts.path.split("/")] if n]
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for name, raw in parse_qsl(parts.query, keep_blank_values=True):
            if name in seen:
                raise ConfigError(f"URL argument {name!r} is given twice")
            seen.add(name)
            if name == "to":
                numbers += [n for n in raw.split(",") if n.strip()]
                continue
            setting = BY_URL_ARG.get(name)
            if setting is None:
                known = ", ".join(sorted(BY_URL_ARG))
                raise ConfigError(f"URL argument {name!r} is unknown (known: {known})")
            values[setting.name] = setting.check(name, raw, text=True)
        return cls(
            api_token=unquote(token),
            sid=unquote(sid),
            recipients=tuple(dict.fromkeys(normalize_msisdn(n, field="URL recipient") for n in numbers)),
            **values,
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> Settings:
        """``url``, ``[gateway]`` sid/api_token/base_url/timeout, ``[pipeline]`` options,
        ``[groups]``, ``[[routes]]``; every key checked against its rule."""
        return cls._from_toml(path).validated(where=str(path))

    @classmethod
    def _from_toml(cls, path: str | Path) -> Settings:
        file = Path(path).expanduser()
        try:
            raw = file.read_bytes()
        except IsADirectoryError:
            raise ConfigError(f"{file}: is a directory, not a TOML file") from None
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{file}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        try:
            return cls._from_data(data)
        except (InvalidValue, ConfigError, InvalidMsisdnError) as exc:
            raise ConfigError(f"{file}: {exc}") from None

    @classmethod
    def _from_data(cls, data: Mapping[str, Any]) -> Settings:
        known_top = ["url", *_TOML_SECTIONS, *_TOML_TABLES, *_OTHER_TABLES]
        for key in data:
            if key in known_top:
                continue
            owner = next((s.section for s in SETTINGS if s.section and s.key == key), None)
            hint = f" (it belongs in [{owner}])" if owner else f" (known: {', '.join(known_top)})"
            raise ConfigError(f"unknown top-level key {key!r}{hint}")
        base = cls()
        if "url" in data:
            if not isinstance(data["url"], str):
                fail("url", data["url"], f"must be an {SCHEME}:// URL string")
            try:
                base = cls._from_url(data["url"])
            except (InvalidValue, ConfigError, InvalidMsisdnError) as exc:
                raise ConfigError(f"url: {exc}") from None
        changes: dict[str, Any] = {}
        for section in _TOML_SECTIONS:
            if section not in data:
                continue
            table = data[section]
            if not isinstance(table, Mapping):
                fail(section, table, f"must be a table ([{section}])")
            for key, value in table.items():
                setting = _BY_TOML.get(f"{section}.{key}")
                if setting is None:
                    owner = next((s.section for s in SETTINGS if s.section and s.key == key), None)
                    hint = (
                        f" (it belongs in [{owner}])"
                        if owner
                        else f" (known: {', '.join(s.key for s in SETTINGS if s.section == section)})"
                    )
                    raise ConfigError(f"[{section}] has unknown key {key!r}{hint}")
                changes[setting.name] = setting.check(setting.toml, value)
        for key, setting in _TOML_TABLES.items():
            if key in data:
                changes[setting.name] = setting.check(key, data[key])
        return replace(base, **changes)

    @classmethod
    def from_env(cls) -> Settings:
        """``SSLSMS_API_TOKEN``, ``SSLSMS_SID``, ``SSLSMS_BASE_URL``, ``SSLSMS_TO``."""
        return cls._from_env().validated()

    @classmethod
    def _from_env(cls) -> Settings:
        values = {
            s.name: s.check(s.env, os.environ[s.env], text=True)
            for s in SETTINGS
            if s.env and os.environ.get(s.env, "").strip()
        }
        return cls(**values)

    @classmethod
    def load(cls, url: str | None = None, config: str | Path | None = None) -> Settings:
        """``--url`` first; else the config file (``--config``, ``SSLSMS_CONFIG`` or the
        default path, if it exists); else ``SSLSMS_URL``; else ``SSLSMS_*`` variables.

        With both a config file and ``SSLSMS_URL``, the file wins and the URL only
        supplies the credentials if the file has none: the token can live in the
        environment while the rest lives in the file.
        """
        return cls.load_with_source(url, config)[0]

    @classmethod
    def load_with_source(
        cls, url: str | None = None, config: str | Path | None = None
    ) -> tuple[Settings, str]:
        """:meth:`load`, and where the settings came from (for ``config check``)."""
        if url is not None:
            return cls.from_url(url), "--url"
        env_url = os.environ.get("SSLSMS_URL", "").strip()
        chosen = config or os.environ.get("SSLSMS_CONFIG", "").strip() or None
        try:
            path = Path(chosen or DEFAULT_CONFIG_PATH).expanduser()
        except RuntimeError:  # no home directory to expand "~" in
            path = None
        if chosen or (path is not None and path.is_file()):
            assert path is not None
            settings = cls._from_toml(path)
            if env_url and not settings.api_token:
                try:
                    from_env = cls._from_url(env_url)
                except (InvalidValue, ConfigError, InvalidMsisdnError) as exc:
                    raise ConfigError(f"SSLSMS_URL: {exc}") from None
                settings = replace(settings, api_token=from_env.api_token, sid=from_env.sid)
            return settings.validated(where=str(path)), str(path)
        if env_url:
            try:
                return cls.from_url(env_url), "SSLSMS_URL"
            except (InvalidValue, InvalidMsisdnError, ConfigError) as exc:
                raise ConfigError(f"SSLSMS_URL: {exc}") from None
        if any(os.environ.get(s.env, "").strip() for s in SETTINGS if s.env):
            try:
                return cls._from_env().validated(where="environment"), "environment"
            except (InvalidValue, InvalidMsisdnError) as exc:
                raise ConfigError(str(exc)) from None
        raise NoConfiguration(
            f"no configuration: pass an {SCHEME}:// URL (--url), set SSLSMS_URL, "
            f"or write {DEFAULT_CONFIG_PATH}"
        )

    # -- checks and outputs ------------------------------------------------------
    def validated(self, *, where: str = "") -> Settings:
        """Every field checked against its rule (and normalised); then the cross-checks:
        credentials present, routes naming groups that exist."""
        try:
            for name in ("api_token", "sid"):
                if getattr(self, name) in ("", None):
                    raise ConfigError(
                        f"{name} is missing: give a URL ({SCHEME}://SID:API_TOKEN@NUMBER) "
                        f"or set [gateway] {name} in the TOML file"
                    )
            changes = {s.name: s.check(s.name, getattr(self, s.name)) for s in SETTINGS}
            checked = replace(self, **changes)
            groups = checked.all_groups()
            for index, route in enumerate(checked.routes):
                for name in route.get("groups") or ():
                    for one in name.split(",") if isinstance(name, str) else [name]:
                        one = one.strip()
                        if one and one not in groups and not looks_like_number(one):
                            raise InvalidValue(
                                f"routes[{index}].groups",
                                shown(one),
                                f"no such group (groups: {', '.join(sorted(groups)) or 'none defined'})",
                            )
        except (InvalidValue, InvalidMsisdnError, ConfigError) as exc:
            raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
        return checked

    def all_groups(self) -> dict[str, tuple[str, ...]]:
        groups = dict(self.groups)
        if self.recipients:
            groups.setdefault("default", self.recipients)
        return groups

    def client(self, **kwargs: Any) -> GatewayClient:
        return GatewayClient(self.api_token, self.sid, base_url=self.base_url, timeout=self.timeout, **kwargs)

    def notifier(self, client: GatewayClient | None = None, **overrides: Any) -> Any:
        from .alerting.notifier import Notifier

        options: dict[str, Any] = {"groups": self.all_groups(), "routes": self.routes}
        options.update({name: getattr(self, name) for name in PIPELINE_FIELDS})
        options.update(overrides)
        return Notifier(client or self.client(), **options)

    def masked_url(self) -> str:
        return self.url(privacy=True)

    def url(self, *, privacy: bool = False) -> str:
        """The one URL that gives these settings back (groups and routes excepted:
        they only exist in a TOML file). ``privacy``: every credential masked."""
        token = MASK if privacy else quote(self.api_token, safe="")
        path = "/".join(quote(n, safe="+") for n in self.recipients)
        args = []
        for setting in SETTINGS:
            if not setting.url_arg or setting.name == "recipients":
                continue
            value = getattr(self, setting.name)
            if value == setting.default:
                continue
            text = _as_text(value, setting)
            if privacy and setting.holds_url:
                text = mask_url(text)
            args.append(f"{setting.url_arg}={quote(text, safe=':/*')}")
        query = ("?" + "&".join(args)) if args else ""
        return f"{SCHEME}://{quote(self.sid, safe='')}:{token}@{path}{query}"

    def describe(self) -> dict[str, Any]:
        """The effective configuration, every credential masked (``config check``)."""
        described: dict[str, Any] = {"url": self.masked_url()}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if setting.secret:
                value = MASK
            elif setting.holds_url:
                value = mask_url(str(value))
            elif setting.name == "groups":
                value = {k: list(v) for k, v in self.all_groups().items()}
            elif setting.name == "routes":
                value = [dict(r) for r in value]
            elif isinstance(value, tuple):
                value = list(value)
            described[setting.name] = value
        return described


# The registry and the fields must agree: a new setting is a row AND a field.
if tuple(f.name for f in fields(Settings)) != tuple(BY_NAME):
    raise RuntimeError("sslsms_notify.config: SETTINGS and the Settings fields differ")


def _as_text(value: Any, setting: Setting) -> str:
    if value is None:
        return "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


class ReferenceRow(NamedTuple):
    name: str
    url_arg: str
    toml_key: str
    env: str
    default: str
    doc: str


def reference_rows() -> list[ReferenceRow]:
    """One row per setting, for the configuration reference the docs render."""
    url_forms = {
        "api_token": f"{SCHEME}://SID:API_TOKEN@",
        "sid": f"{SCHEME}://SID:API_TOKEN@",
        "recipients": "path /NUMBER/NUMBER, or to=N1,N2",
    }
    rows = []
    for s in SETTINGS:
        url_arg = url_forms.get(s.name, s.url_arg or "")
        toml_key = (
            f"[{s.section}] {s.key}" if s.section else f"[{s.key}]" if s.key == "groups" else "[[routes]]"
        )
        default = s.default_text if s.default_text is not None else _as_text(s.default, s)
        rows.append(ReferenceRow(s.name, url_arg, toml_key, s.env or "", default, f"{s.doc}; {s.rule.rule}"))
    return rows


def read_section(path: str | Path, name: str) -> dict[str, Any]:
    """One table of a TOML config file (e.g. ``[relay]``), or ``{}``; errors name the file."""
    file = Path(path).expanduser()
    try:
        data = tomllib.loads(file.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: {exc}") from None
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{name}] must be a table")
    return table
