"""sslsms-notify: alerts to SMS through the SSL Wireless Push SMS API v3.

Three doors: :class:`SMSHandler` for :mod:`logging`, the ``sslsms://`` apprise
plugin, and the ``sslsms-notify`` command line; underneath them the alert
pipeline :class:`Notifier` and the typed :class:`GatewayClient`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .gateway import (
    DEFAULT_BASE_URL,
    ApiStatus,
    AsyncGatewayClient,
    AuthError,
    BadRequestError,
    DynamicMessage,
    GatewayClient,
    GatewayError,
    InvalidMsisdnError,
    RateLimitError,
    RetryPolicy,
    SendResult,
    ServerError,
    SmsInfo,
    SmsStatus,
    TransportError,
)
from .version import __version__

if TYPE_CHECKING:
    from .alerting.alert import Alert, Severity
    from .alerting.notifier import Notifier
    from .config import Settings
    from .integrations.logging import SMSHandler
    from .outcomes import ExitCode, Outcome, SmsState

# Heavier parts load on first use, so `import sslsms_notify` stays cheap.
_LAZY = {
    "Notifier": "sslsms_notify.alerting.notifier",
    "Alert": "sslsms_notify.alerting.alert",
    "Severity": "sslsms_notify.alerting.alert",
    "SMSHandler": "sslsms_notify.integrations.logging",
    "Settings": "sslsms_notify.config",
    "Outcome": "sslsms_notify.outcomes",
    "ExitCode": "sslsms_notify.outcomes",
    "SmsState": "sslsms_notify.outcomes",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sslsms_notify' has no attribute {name!r}")


__all__ = [
    "DEFAULT_BASE_URL",
    "Alert",
    "ApiStatus",
    "AsyncGatewayClient",
    "AuthError",
    "BadRequestError",
    "DynamicMessage",
    "ExitCode",
    "GatewayClient",
    "GatewayError",
    "InvalidMsisdnError",
    "Notifier",
    "Outcome",
    "RateLimitError",
    "RetryPolicy",
    "SMSHandler",
    "SendResult",
    "ServerError",
    "Settings",
    "Severity",
    "SmsInfo",
    "SmsState",
    "SmsStatus",
    "TransportError",
    "__version__",
]
