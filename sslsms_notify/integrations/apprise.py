"""apprise plugin: ``sslsms://{sid}:{api_token}@{msisdn}/{msisdn}/...?base_url=...``.

Importing this module registers the ``sslsms://`` scheme with apprise. For the
``apprise`` CLI and config files, install a one-line loader into apprise's
plugin path once::

    sslsms-notify apprise install      # writes ~/.config/apprise/plugins/sslsms.py

Every notification goes through the alert pipeline, so the URL takes the
pipeline's options: ``dedup``, ``repeat``, ``group_wait``, ``tps``, ``cap``,
``cap_period``, ``segments``, ``store`` (see :mod:`sslsms_notify.config`).
Several numbers get one bulk request per 100, not one request each.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from apprise import NotifyType
from apprise.manager_plugins import NotificationManager
from apprise.plugins.base import NotifyBase
from apprise.url import PrivacyMode
from apprise.utils.parse import parse_phone_no

from ..alerting.alert import Severity
from ..config import _URL_ARGS, Settings
from ..gateway.models import MAX_RECIPIENTS_PER_REQUEST
from ..gateway.msisdn import InvalidMsisdnError, normalize_msisdn

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
        **{name: {"name": name, "type": "string"} for name in _URL_ARGS if name != "level"},
        **{"to": {"alias_of": "targets"}},
    )

    def __init__(self, targets: Any = None, options: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.options = {k: v for k, v in (options or {}).items() if k in _URL_ARGS and k != "level"}
        self.targets: list[str] = []
        self.invalid_targets: list[str] = []
        for target in parse_phone_no(targets) if targets else []:
            try:
                self.targets.append(normalize_msisdn(target))
            except InvalidMsisdnError as exc:
                self.logger.warning("Dropped invalid phone number: %s", exc)
                self.invalid_targets.append(target)
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        sid, token = self.user or "", self.password or ""
        try:
            self.settings = Settings.from_url(
                f"sslsms://{NotifyBase.quote(sid, safe='')}:{NotifyBase.quote(token, safe='')}@"
                + "/".join(self.targets)
                + (f"?{query}" if query else "")
            )
        except ValueError as exc:
            self.logger.warning("Invalid sslsms:// URL: %s", exc)
            from apprise.exception import AppriseInvalidData

            raise TypeError(str(exc)) from AppriseInvalidData(str(exc))
        self._notifier: Any = None

    @property
    def notifier(self) -> Any:
        if self._notifier is None:
            self._notifier = self.settings.notifier(close_at_exit=DELIVERY_TIMEOUT)
        return self._notifier

    def send(
        self, body: str, title: str = "", notify_type: NotifyType = NotifyType.INFO, **kwargs: Any
    ) -> bool:
        if not self.targets:
            self.logger.warning("There are no valid sslsms targets to notify.")
            return False
        text = f"{title}\n{body}".strip() if title else body
        notifier = self.notifier
        before = notifier.stats()
        try:
            notifier.alert(text, severity=_SEVERITY.get(notify_type, Severity.INFO), source="apprise")
        except ValueError as exc:
            self.logger.warning("sslsms notification rejected: %s", exc)
            return False
        delivered = notifier.flush(DELIVERY_TIMEOUT)
        after = notifier.stats()
        failed = after["failed"] - before["failed"]
        sent = after["sent"] - before["sent"]
        if after["suppressed"] > before["suppressed"]:
            self.logger.info("sslsms: a repeat inside the dedup window; counted for the summary")
        if failed or not delivered:
            self.logger.warning(
                "Failed to deliver sslsms notification to %d of %d phone(s)%s.",
                failed + after["pending"],
                len(self.targets),
                f" ({notifier.dispatcher.last_error})" if notifier.dispatcher.last_error else "",
            )
            return False
        self.logger.info("Sent sslsms notification to %d phone(s).", sent)
        return not self.invalid_targets

    def url(self, privacy: bool = False, *args: Any, **kwargs: Any) -> str:
        params = dict(self.options)
        params.update(self.url_parameters(*args, privacy=privacy, **kwargs))
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
        results = NotifyBase.parse_url(url, verify_host=False)
        if not results:
            return results
        results["targets"] = [
            NotifySSLSMS.unquote(results["host"]),
            *NotifySSLSMS.split_path(results["fullpath"]),
        ]
        if results["qsd"].get("to"):
            results["targets"] += parse_phone_no(results["qsd"]["to"])
        results["options"] = {k: NotifySSLSMS.unquote(v) for k, v in results["qsd"].items() if k in _URL_ARGS}
        return results


N_MGR = NotificationManager()  # a singleton: the one apprise itself uses


def register() -> None:
    if "sslsms" not in N_MGR:
        N_MGR.add(NotifySSLSMS, schemas="sslsms")


register()
