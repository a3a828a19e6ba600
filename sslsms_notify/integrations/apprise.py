"""apprise plugin: ``sslsms://{sid}:{api_token}@{msisdn}/{msisdn}/...?base_url=...``.

Importing this module registers the ``sslsms://`` scheme with apprise. For the
``apprise`` CLI and config files, install a one-line loader into apprise's
plugin path once::

    sslsms-notify apprise install      # writes ~/.config/apprise/plugins/sslsms.py

Every notification goes through the alert pipeline, so the URL takes the
pipeline's options: ``dedup``, ``repeat``, ``group_wait``, ``tps``, ``cap``,
``cap_period``, ``segments``, ``store`` (see :mod:`sslsms_notify.config`).
Several numbers get one bulk request per 100, not one request each. A bad value
makes apprise refuse the URL, with the field and the rule in its log
(``cap_period='0': must be a number of seconds greater than 0 ...``).

Where the state lives when the URL has no ``store=``:

- in a Python process that keeps running (a web app, a worker): in memory, as
  dedup windows and caps only need to outlive one notification;
- run from the ``apprise`` command line, every notification is a new process, so
  memory would forget every window and cap. The plugin then uses the same SQLite
  file as ``sslsms-notify send`` for the same account
  (``$XDG_STATE_HOME/sslsms-notify/state-<account>.db``, default ``~/.local/state``),
  and dedup and caps hold across invocations (and
  across the two commands). "Run from the apprise CLI" means:
  ``os.path.basename(sys.argv[0])`` starts with ``apprise``.

One pipeline per configuration and process: apprise builds a new plugin object for
every ``Apprise().add()``, and an application may build one per notification; they
all share the pipeline of their URL (its dedup windows, caps and two threads), which
closes at interpreter exit, or at :func:`close_pipelines`.

``notify()`` waits for the SMS of this notification only (never for other SMS a
shared outbox holds), at most :data:`DELIVERY_TIMEOUT` seconds. A repeat inside
the dedup window, an alert held by a per-phone cap (it goes out in a digest) or
gathered by ``group_wait`` counts as accepted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import threading
import time
from dataclasses import replace
from typing import Any, ClassVar

import apprise.manager_plugins
import apprise.plugins.base
import apprise.utils.parse
from apprise import NotifyType
from apprise.url import PrivacyMode

from ..alerting.alert import Severity
from ..alerting.delivery import deliver
from ..config import URL_ARGS, ConfigError, Settings, default_state_url, mask_url
from ..gateway.models import MAX_RECIPIENTS_PER_REQUEST
from ..gateway.msisdn import InvalidMsisdnError, normalize_msisdn
from ..outcomes import Outcome

# apprise's annotations are partial (untyped helpers, attributes typed None): to us it is Any.
NotifyBase: Any = apprise.plugins.base.NotifyBase
NotificationManager: Any = apprise.manager_plugins.NotificationManager
parse_phone_no: Any = apprise.utils.parse.parse_phone_no

LOADER = (
    "# Registers the sslsms:// scheme (sslsms-notify).\n"
    "import sslsms_notify.integrations.apprise  # noqa: F401\n"
)

_SEVERITY = {
    NotifyType.INFO: Severity.INFO,
    NotifyType.SUCCESS: Severity.INFO,
    NotifyType.WARNING: Severity.WARNING,
    NotifyType.FAILURE: Severity.ERROR,
}
#: seconds a notify() waits for the gateway (retries and backoff included)
DELIVERY_TIMEOUT = 30.0
#: seconds a process waits at exit for SMS it leaves in a durable store (the next run sends them)
DURABLE_EXIT_TIMEOUT = 2.0
#: the intake's verdicts that count as accepted: nothing to send now, and nothing lost
_ACCEPTED_UNSENT = (Outcome.SUPPRESSED, Outcome.THROTTLED, Outcome.BUFFERED, Outcome.SILENCED, Outcome.HELD)
#: URL arguments the plugin forwards to the pipeline (level is SMSHandler's; to= is apprise's targets)
_OPTIONS = tuple(name for name in URL_ARGS if name not in ("level", "to"))


#: arguments apprise itself reads from every URL (besides ours, its "store" is a yes/no)
_APPRISE_ARGS = frozenset(NotifyBase.template_args) - {"store"}
#: apprise's own "store" argument switches its persistent storage: store=yes / store=no
_APPRISE_BOOLS = frozenset({"yes", "no", "true", "false", "on", "off", "y", "n", "1", "0"})


def _apprise_flag(name: str, value: Any) -> bool:
    """``store=no`` is apprise's persistent-storage switch, not a store URL of ours."""
    return name == "store" and str(value).strip().lower() in _APPRISE_BOOLS


#: the pipeline of each configuration in this process (see the module's docstring)
_PIPELINES: dict[str, Any] = {}
_PIPELINES_LOCK = threading.Lock()


def _pipeline_for(settings: Settings) -> Any:
    """The running pipeline of this configuration, started on first use."""
    key = json.dumps(dataclasses.asdict(settings), sort_keys=True, default=repr)
    with _PIPELINES_LOCK:
        notifier = _PIPELINES.get(key)
        if notifier is None or notifier.closed:
            durable = settings.store != "memory"
            notifier = _PIPELINES[key] = settings.notifier(
                close_at_exit=DURABLE_EXIT_TIMEOUT if durable else DELIVERY_TIMEOUT
            )
        return notifier


def close_pipelines(timeout: float | None = DURABLE_EXIT_TIMEOUT) -> bool:
    """Close every pipeline the plugin started in this process (interpreter exit does it
    too); True if each delivered everything within ``timeout``. The next notify starts anew."""
    with _PIPELINES_LOCK:
        pipelines = list(_PIPELINES.values())
        _PIPELINES.clear()
    return all([notifier.close(timeout) for notifier in pipelines])


def run_from_apprise_cli() -> bool:
    """True inside the ``apprise`` command line (one process per notification)."""
    return os.path.basename(sys.argv[0] if sys.argv else "").startswith("apprise")


class NotifySSLSMS(NotifyBase):  # type: ignore[misc]
    """SMS through the SSL Wireless Push SMS API v3, via the sslsms-notify pipeline."""

    service_name = "SSL Wireless SMS"
    service_url = "https://sslwireless.com/"
    secure_protocol = "sslsms"
    setup_url = "https://pypi.org/project/sslsms-notify/"
    body_maxlen = 1000  # the gateway's limit; the pipeline fits it to the segment budget
    title_maxlen = 0  # SMS have no title: apprise puts it into the body
    default_batch_size = MAX_RECIPIENTS_PER_REQUEST
    templates = ("{schema}://{sid}:{api_token}@{targets}",)
    template_tokens: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_tokens,
        **{
            "sid": {"name": "SID", "type": "string", "required": True, "map_to": "user"},
            "api_token": {
                "name": "API Token",
                "type": "string",
                "private": True,
                "required": True,
                "map_to": "password",
            },
            "target_phone": {"name": "Target Phone No", "type": "string", "map_to": "targets"},
            "targets": {"name": "Targets", "type": "list:string", "required": True},
        },
    )
    template_args: ClassVar[dict[str, Any]] = dict(
        NotifyBase.template_args,
        **{name: {"name": name, "type": "string"} for name in _OPTIONS},
        **{"to": {"alias_of": "targets"}},
    )

    def __init__(self, targets: Any = None, options: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Ours go to the pipeline; apprise's own (format, overflow...) stay apprise's; any
        # other is refused below by the settings, naming it, as the configuration page says.
        self.options = {
            k: v for k, v in (options or {}).items() if k not in _APPRISE_ARGS and not _apprise_flag(k, v)
        }
        self.targets: list[str] = []
        self.invalid_targets: list[str] = []
        for target in parse_phone_no(targets) if targets else []:
            try:
                self.targets.append(normalize_msisdn(target))
            except InvalidMsisdnError as exc:
                self.logger.warning("Dropped invalid phone number: %s", exc)
                self.invalid_targets.append(target)
        query = "&".join(f"{k}={NotifyBase.quote(str(v), safe='')}" for k, v in self.options.items())
        sid, token = self.user or "", self.password or ""
        try:
            self.settings = Settings.from_url(
                f"sslsms://{NotifyBase.quote(sid, safe='')}:{NotifyBase.quote(token, safe='')}@"
                + "/".join(self.targets)
                + (f"?{query}" if query else "")
            )
        except ValueError as exc:
            message = mask_url(str(exc))
            self.logger.warning("Invalid sslsms:// URL: %s", message)
            # apprise takes a TypeError from a plugin's constructor as "this URL is invalid"
            raise TypeError(message) from None
        if "store" not in self.options and run_from_apprise_cli():
            try:
                # one file per gateway account: an SMS one account left is never sent by another
                state = default_state_url(self.settings.sid, self.settings.base_url)
                self.settings = replace(self.settings, store=state)
            except ConfigError as exc:
                self.logger.warning("sslsms: state kept in memory only: %s", exc)

    @property
    def notifier(self) -> Any:
        """The pipeline of this URL's configuration, shared in this process."""
        return _pipeline_for(self.settings)

    def send(
        self, body: str, title: str = "", notify_type: NotifyType = NotifyType.INFO, **kwargs: Any
    ) -> bool:
        from ..stores import StoreUnavailableError

        if not self.targets:
            self.logger.warning("There are no valid sslsms targets to notify.")
            return False
        text = f"{title}\n{body}".strip() if title else body
        try:
            notifier = self.notifier
        except (ValueError, StoreUnavailableError, ImportError) as exc:
            self.logger.warning("sslsms: cannot start the alert pipeline: %s", mask_url(str(exc)))
            return False
        try:
            ticket = notifier.submit(
                text, severity=_SEVERITY.get(notify_type, Severity.INFO), source="apprise"
            )
        except ValueError as exc:
            self.logger.warning("sslsms notification rejected: %s", exc)
            return False
        delivery = deliver(notifier, ticket, time.monotonic() + DELIVERY_TIMEOUT)
        reasons = "; ".join(delivery.reasons)
        if delivery.status in _ACCEPTED_UNSENT:
            self.logger.info("sslsms: %s", delivery.status.meaning)
            return not self.invalid_targets
        if delivery.status is not Outcome.QUEUED:
            self.logger.warning("sslsms notification not sent: %s", reasons or delivery.status)
            return False
        if delivery.failed or delivery.pending:
            self.logger.warning(
                "Failed to deliver sslsms notification to %d of %d phone(s)%s.",
                delivery.failed + delivery.pending,
                len(self.targets),
                f" ({reasons})" if reasons else "",
            )
            return False
        held = f"; {delivery.throttled} held by the per-phone cap" if delivery.throttled else ""
        self.logger.info("Sent sslsms notification to %d phone(s)%s.", delivery.delivered, held)
        return not self.invalid_targets

    def url(self, privacy: bool = False, *args: Any, **kwargs: Any) -> str:
        params = self.url_parameters(*args, privacy=privacy, **kwargs)
        # after apprise's own: its "store" (a yes/no for its persistent storage) must
        # not replace ours (where the pipeline keeps its state)
        params.update({k: mask_url(str(v)) if privacy else v for k, v in self.options.items()})
        return "{schema}://{sid}:{token}@{targets}/?{params}".format(
            schema=self.secure_protocol,
            sid=self.pprint(self.user, privacy, safe=""),
            token=self.pprint(self.password, privacy, mode=PrivacyMode.Secret, safe=""),
            targets="/".join(NotifySSLSMS.quote(t, safe="") for t in [*self.targets, *self.invalid_targets]),
            params=NotifySSLSMS.urlencode(params),
        )

    @property
    def url_identifier(self) -> tuple[Any, ...]:
        return (self.secure_protocol, self.user, self.password, self.options.get("base_url"))

    def __len__(self) -> int:
        # one bulk request per 100 numbers
        return max(1, math.ceil(len(self.targets) / MAX_RECIPIENTS_PER_REQUEST))

    @staticmethod
    def parse_url(url: str) -> dict[str, Any] | None:
        results: dict[str, Any] | None = NotifyBase.parse_url(url, verify_host=False)
        if not results:
            return results
        results["targets"] = [
            NotifySSLSMS.unquote(results["host"]),
            *NotifySSLSMS.split_path(results["fullpath"]),
        ]
        if results["qsd"].get("to"):
            results["targets"] += parse_phone_no(results["qsd"]["to"])
        results["options"] = {
            k: NotifySSLSMS.unquote(v) for k, v in results["qsd"].items() if k not in ("to", "level")
        }
        return results


N_MGR = NotificationManager()  # a singleton: the one apprise itself uses


def register() -> None:
    if "sslsms" not in N_MGR:
        N_MGR.add(NotifySSLSMS, schemas="sslsms")


register()
