"""The settings registry: every setting of every section, declared once.

A :class:`Setting` names its field, its ``sslsms://`` URL argument, its TOML key, its
environment variable, its default, a one-line doc and its rule. Two records read the
declarations: :data:`SETTINGS` are the fields of :class:`~.settings.Settings`
(``[gateway]``, ``[pipeline]``, ``[groups]``, ``[[routes]]``), :data:`RELAY_SETTINGS`
those of :class:`~sslsms_notify.relay.settings.RelaySettings` (``[relay]``). Parsing,
checking, printing and the configuration reference (:func:`reference_rows`) all read
these tables, so a new setting is one new declaration and one field.

A value is checked where it enters, by its declaration:
``BY_NAME["dedup_window"].check("dedup_window", 300)``, or for a set of keywords,
:func:`checked_options`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..durations import Duration
from ..gateway.client import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, MAX_SID_LENGTH, MAX_TOKEN_LENGTH
from ..severity import SEVERITIES
from ..validation import (
    LOG_LEVELS,
    Choice,
    Flag,
    HttpURL,
    Level,
    Number,
    Positive,
    Rule,
    StoreURL,
    Text,
    Whole,
)
from .rules import (
    DEFAULT_LISTEN,
    Account,
    Connections,
    Groups,
    LabelName,
    Listen,
    NotifyURLs,
    Numbers,
    Routes,
    Tokens,
)

SCHEME = "sslsms"
DAY = 86400.0
MONTH = 30 * DAY


@dataclass(frozen=True)
class Setting:
    """One setting, wherever it is given."""

    #: the record's field (for :data:`SETTINGS` also the Notifier or client keyword)
    name: str
    #: the ``sslsms://`` URL argument, or None (credentials live in the URL's userinfo)
    url_arg: str | None
    #: ``section.key`` in the TOML file ("" for a top-level table)
    toml: str
    #: environment variable that sets it
    env: str | None
    default: Any
    #: what it means, one sentence (the rule's sentence is added in the reference)
    doc: str
    rule: Rule
    #: never shown: not in reprs, URLs printed in privacy mode, or error messages
    secret: bool = False
    #: 0 from a user means "off", stored as None (the per-phone cap)
    zero_is_none: bool = False
    #: None is a valid value (meaning "the default behaviour", e.g. repeat = dedup window)
    optional: bool = False
    #: a URL that may hold credentials of its own (masked when printed)
    holds_url: bool = False
    #: how the default reads in the reference, when the value says it badly
    default_text: str | None = None
    #: how an error names the value when no URL argument, TOML key or variable does
    label: str = ""
    #: also a :class:`~sslsms_notify.alerting.notifier.Notifier` keyword of the same name
    notifier_option: bool = False

    def check(self, label: str, value: Any, *, text: bool = False) -> Any:
        """``value`` as this setting stores it, or a ValueError naming ``label``, the value
        and the rule (:class:`~sslsms_notify.validation.InvalidValue` for most rules)."""
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

    @property
    def toml_key(self) -> str:
        """As the reference writes it: ``[pipeline] tps``, ``[groups]``, ``[[routes]]``."""
        if self.section:
            return f"[{self.section}] {self.key}"
        return "[[routes]]" if self.key == "routes" else f"[{self.key}]"

    @property
    def default_shown(self) -> str:
        return self.default_text if self.default_text is not None else as_text(self.default)


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
        notifier_option=True,
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
        notifier_option=True,
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
        notifier_option=True,
    ),
    Setting(
        name="group_wait",
        url_arg="group_wait",
        toml="pipeline.group_wait",
        env=None,
        default=0.0,
        doc="seconds to gather distinct alerts for a group into one SMS",
        rule=Number(0, DAY, unit="seconds", note=_SECONDS_OFF),
        notifier_option=True,
    ),
    Setting(
        name="tps",
        url_arg="tps",
        toml="pipeline.tps",
        env=None,
        default=10.0,
        doc="requests per second to the gateway (your account's TPS), shared through the store",
        rule=Number(0, 10_000, low_open=True),
        notifier_option=True,
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
        notifier_option=True,
    ),
    Setting(
        name="per_recipient_period",
        url_arg="cap_period",
        toml="pipeline.per_recipient_period",
        env=None,
        default=3600.0,
        doc="the period of the per-phone cap, in seconds",
        rule=Number(0, MONTH, low_open=True, unit="seconds"),
        notifier_option=True,
    ),
    Setting(
        name="max_segments",
        url_arg="segments",
        toml="pipeline.max_segments",
        env=None,
        default=2,
        doc="SMS parts a message may use (longer texts are cut; 1000 characters = 15 UCS-2 parts)",
        rule=Number(1, 15, whole=True),
        notifier_option=True,
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
        notifier_option=True,
    ),
    Setting(
        name="replica_wait",
        url_arg="replica_wait",
        toml="pipeline.replica_wait",
        env=None,
        default=0.5,
        doc="seconds a write to a Redis store waits for one replica to have it (`WAIT 1`) while the "
        "master has replicas: the relay answers 202, and an SMS is sent, only after it; past it the "
        "write counts anyway, logged and counted (`replica_timeouts`)",
        rule=Number(0, 10, unit="seconds", note=_SECONDS_OFF),
        notifier_option=True,
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
        notifier_option=True,
    ),
    Setting(
        name="max_windows",
        url_arg="max_windows",
        toml="pipeline.max_windows",
        env=None,
        default=100_000,
        doc="dedup windows kept; beyond it the ones ending first close early",
        rule=Number(1, 10_000_000, whole=True),
        notifier_option=True,
    ),
    Setting(
        name="max_pending",
        url_arg="max_pending",
        toml="pipeline.max_pending",
        env=None,
        default=10_000,
        doc="SMS waiting in the outbox; beyond it the oldest become dead letters",
        rule=Number(1, 10_000_000, whole=True),
        notifier_option=True,
    ),
    # (the on-call settings, declared compactly: this module stays under 600 lines)
    Setting(
        name="fallback", url_arg=None, toml="pipeline.fallback", env=None, default=(), rule=NotifyURLs(),
        holds_url=True, default_text="(none)", notifier_option=True,
        doc="apprise URLs told once, with a summary, when the SMS path fails (credentials refused, "
        "SMS waiting past fallback_after, dead letters) and when it recovers; needs apprise",
    ),
    Setting(
        name="fallback_after", url_arg=None, toml="pipeline.fallback_after", env=None, default=600.0,
        default_text="600 (10 minutes)", rule=Number(1, DAY, unit="seconds"), notifier_option=True,
        doc="seconds SMS may wait while the gateway fails before the fallback channel is told, and "
        "before [gateway.secondary] takes over",
    ),
    Setting(
        name="secondary", url_arg=None, toml="gateway.secondary", env=None, default=None, rule=Account(),
        optional=True, secret=True, default_text="(none)",
        doc="a second gateway account ({sid, api_token, base_url}) for when the first refuses our "
        "credentials or has failed for fallback_after; an SMS handed to it never goes back",
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
        notifier_option=True,
    ),
)


RELAY_SETTINGS: tuple[Setting, ...] = (
    Setting(
        name="listen",
        url_arg=None,
        toml="relay.listen",
        env="SSLSMS_RELAY_LISTEN",
        default=DEFAULT_LISTEN,
        doc="HOST:PORT to listen on; loopback by default (port 0: any free port)",
        rule=Listen(),
    ),
    Setting(
        name="tokens",
        url_arg=None,
        toml="relay.tokens",
        env="SSLSMS_RELAY_TOKENS",
        default=(),
        doc="bearer tokens producers may present (`Authorization: Bearer <token>`); "
        "the relay refuses to start without one",
        rule=Tokens(),
        secret=True,
        default_text="(none: required)",
        label="relay tokens",
    ),
    Setting(
        name="max_body",
        url_arg=None,
        toml="relay.max_body",
        env=None,
        default=1 << 20,
        doc="the largest request body accepted, in bytes; a larger one is refused with 413 while it is read",
        rule=Whole(1024, 64 << 20),
        default_text="1048576 (1 MiB)",
    ),
    Setting(
        name="shutdown_timeout",
        url_arg=None,
        toml="relay.shutdown_timeout",
        env=None,
        default=10.0,
        doc="seconds SIGTERM or SIGINT may take: half for the requests under way, half for "
        "closing the pipeline",
        rule=Positive(600, unit="seconds"),
    ),
    Setting(
        name="send_resolved",
        url_arg=None,
        toml="relay.send_resolved",
        env=None,
        default=True,
        doc="resolved Alertmanager and Grafana alerts become `[RESOLVED] ...` SMS (false: they are ignored)",
        rule=Flag(),
    ),
    Setting(
        name="severity_label",
        url_arg=None,
        toml="relay.severity_label",
        env=None,
        default="severity",
        doc="the alert label read as the severity (`critical`, `page`, `p1` ... `info`, `low`, `none`)",
        rule=LabelName(),
    ),
    Setting(
        name="groups_label",
        url_arg=None,
        toml="relay.groups_label",
        env=None,
        default="sms_groups",
        doc="the alert label naming recipient groups, comma-separated; without it (or if it "
        "names no group the relay knows) the routes decide",
        rule=LabelName(),
    ),
    Setting(
        name="default_severity",
        url_arg=None,
        toml="relay.default_severity",
        env=None,
        default="error",
        doc="the severity of an alert whose severity label is missing or not understood",
        rule=Choice(SEVERITIES),
    ),
    Setting(
        name="allow_numbers",
        url_arg=None,
        toml="relay.allow_numbers",
        env=None,
        default=False,
        doc="whether producers may name phone numbers directly (in `groups` or the groups "
        "label); by default only configured groups, so a relay token cannot send SMS to any number",
        rule=Flag(),
    ),
    Setting(
        name="log_level",
        url_arg=None,
        toml="relay.log_level",
        env=None,
        default="info",
        doc="what the relay writes to stderr; `--log-level` wins. `info` shows the start line and "
        "recoveries besides every warning (dead letters, gateway failures, misrouted webhook "
        "alerts, SMS left at shutdown), and nothing per request or per SMS",
        rule=Choice(LOG_LEVELS, any_case=True),
    ),
    Setting(
        name="max_connections",
        url_arg=None,
        toml="relay.max_connections",
        env=None,
        default="auto",
        doc="open HTTP connections at most; `auto` derives it from the process's file-descriptor "
        "limit (`RLIMIT_NOFILE`, systemd's `LimitNOFILE`), leaving room for the store, the gateway "
        "and the logs (at most 4096). Past it, the connection waiting longest without a request "
        "being answered (idle, or its request still arriving) is closed to make room; if every one "
        "has a request being answered, the newcomer gets `503`. A number above what the limit "
        "allows is refused at start",
        rule=Connections(),
    ),
    Setting(
        name="idle_timeout",
        url_arg=None,
        toml="relay.idle_timeout",
        env=None,
        default=5.0,
        doc="seconds a connection may stay silent when it has no request being answered (on "
        "opening, or between keep-alive requests) before it is closed",
        rule=Positive(3600, unit="seconds"),
    ),
    Setting(
        name="watchdog_alertname", url_arg=None, toml="relay.watchdog_alertname", env=None,
        default="Watchdog", rule=Text("an alert name", max_length=200),
        doc="the `alertname` of an always-firing alert (Alertmanager's `Watchdog`, or a Grafana rule "
        "that always fires) taken as the heartbeat `alertmanager` (or `grafana`): it never pages by "
        "itself, and its silence pages `[MISSED] monitoring: Alertmanager silent since ...` once; "
        "empty: no watchdog",
    ),
    Setting(
        name="watchdog_timeout", url_arg=None, toml="relay.watchdog_timeout", env=None, default=600.0,
        default_text="600 (10 minutes)", rule=Duration(1, 7 * 86400),
        doc="how long the watchdog alert may stay away before its silence pages; longer than the "
        "repeat_interval of its Alertmanager route (or Grafana's notification policy)",
    ),
    Setting(
        name="read_timeout",
        url_arg=None,
        toml="relay.read_timeout",
        env=None,
        default=10.0,
        doc="seconds a request may take to arrive in full (request line, headers and body) from "
        "its first byte; a slower one's connection is closed. Time spent answering is not counted",
        rule=Positive(3600, unit="seconds"),
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
RELAY_BY_NAME: dict[str, Setting] = {s.name: s for s in RELAY_SETTINGS}
BY_URL_ARG: dict[str, Setting] = {s.url_arg: s for s in SETTINGS if s.url_arg}
#: the URL arguments, for integrations that forward them (apprise)
URL_ARGS: tuple[str, ...] = tuple(BY_URL_ARG)
#: every declaration by ``section.key`` (top-level tables by their name), all sections
BY_TOML: dict[str, Setting] = {s.toml: s for s in (*SETTINGS, *RELAY_SETTINGS)}
#: the TOML sections of :class:`~.settings.Settings` and those other records read
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS if s.section))
OTHER_SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in RELAY_SETTINGS))
#: top-level tables that are one setting each: ``[groups]``, ``[[routes]]``
TABLES: dict[str, Setting] = {s.toml: s for s in SETTINGS if not s.section}
#: Settings fields that are Notifier options of the same name
PIPELINE_FIELDS: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.notifier_option)


def owner_section(key: str) -> str | None:
    """The section a bare key belongs in (for "it belongs in [pipeline]" hints), or None."""
    return next((s.section for s in BY_TOML.values() if s.section and s.key == key), None)


def checked_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Notifier keywords checked by their settings' rules, each error naming the keyword.

    ``checked_options({"dedup_window": 300, "per_recipient_limit": 0})`` is
    ``{"dedup_window": 300.0, "per_recipient_limit": None}``; a name that is no
    Notifier option of the registry is refused (a TypeError, as for a bad keyword).
    """
    checked = {}
    for name, value in options.items():
        setting = BY_NAME.get(name)
        if setting is None or not setting.notifier_option:
            raise TypeError(f"{name!r} is not a pipeline setting (known: {', '.join(PIPELINE_FIELDS)})")
        checked[name] = setting.check(name, value)
    return checked


def as_text(value: Any) -> str:
    """A value as a URL argument or the reference writes it (300.0 -> 300, None -> 0)."""
    if value is None:
        return "0"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


class ReferenceRow(NamedTuple):
    """One setting as the configuration reference shows it."""

    name: str
    url_arg: str
    toml_key: str
    env: str
    default: str
    #: what it means, then its rule
    doc: str


_URL_FORMS = {
    "api_token": f"{SCHEME}://SID:API_TOKEN@",
    "sid": f"{SCHEME}://SID:API_TOKEN@",
    "recipients": "path /NUMBER/NUMBER, or to=N1,N2",
}


def reference_rows(declared: Sequence[Setting] = SETTINGS) -> list[ReferenceRow]:
    """One row per setting, for the configuration reference the docs render
    (``reference_rows(RELAY_SETTINGS)``: the ``[relay]`` section)."""
    return [
        ReferenceRow(
            s.name,
            _URL_FORMS.get(s.name, s.url_arg or ""),
            s.toml_key,
            s.env or "",
            s.default_shown,
            f"{s.doc}; {s.rule.rule}",
        )
        for s in declared
    ]
