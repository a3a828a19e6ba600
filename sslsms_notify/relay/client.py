"""``sslsms-notify send --relay URL``: hand an alert to a relay instead of the gateway.

The producer holds only a relay token (``SSLSMS_RELAY_TOKEN``), never the gateway's.
The relay answers once the alert is decided and stored, and with ``?wait=`` also
the gateway's outcome for the SMS it created, so the CLI reports the same
outcomes (and exit codes) as when it sends itself:

    delivered | suppressed | throttled | buffered | unrouted | rejected |
    auth_failed | unreachable (the SMS waits in the relay's outbox, or the
    relay's answer was lost after it got the alert) | relay_unreachable
    (nothing was queued: the relay was not reached, or answered 503)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from ..gateway.client import default_transport
from ..outcomes import Outcome, SmsState
from ..version import __version__

MAX_WAIT = 60.0


@dataclass(frozen=True)
class RelayOutcome:
    #: an :class:`~sslsms_notify.outcomes.Outcome`, or the word a (newer) relay answered with
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def send_via_relay(
    url: str,
    token: str,
    alert: dict[str, Any],
    *,
    wait: float,
    timeout: float | None = None,
) -> RelayOutcome:
    """Post one alert to ``{url}/v1/alerts?wait=...`` and read what became of it."""
    if not url.startswith(("http://", "https://")):
        return RelayOutcome(Outcome.REJECTED, error=f"relay={url!r}: must start with http:// or https://")
    wait = max(0.0, min(wait, MAX_WAIT))
    try:
        with httpx.Client(
            base_url=url.rstrip("/"),
            transport=default_transport(),
            timeout=httpx.Timeout(timeout or wait + 10.0, connect=5.0),
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"sslsms-notify/{__version__}"},
        ) as client:
            answer = client.post("/v1/alerts", params={"wait": f"{wait:g}"}, json=alert)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing reached the relay
        return RelayOutcome(Outcome.RELAY_UNREACHABLE, error=f"relay {url}: {type(exc).__name__}: {exc}")
    except httpx.HTTPError as exc:  # sent, but the answer was lost: the relay may have it
        return RelayOutcome(
            Outcome.UNREACHABLE,
            error=f"relay {url}: answer lost ({type(exc).__name__}); it may have queued the alert",
        )
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.status_code == 401:
        return RelayOutcome(Outcome.RELAY_REFUSED, error="the relay refused the token (SSLSMS_RELAY_TOKEN)")
    if answer.status_code in (400, 413, 422):
        return RelayOutcome(Outcome.REJECTED, body, error=str(body.get("error", answer.text[:200])))
    if answer.status_code == 503:  # the relay said it did not take it (queue full, store slow)
        return RelayOutcome(
            Outcome.RELAY_UNREACHABLE, body, error=f"relay answered 503: {body.get('error', '')}"
        )
    if answer.status_code >= 500 or not isinstance(body, dict) or not body.get("alerts"):
        return RelayOutcome(
            Outcome.UNREACHABLE,
            body,
            error=f"relay answered {answer.status_code}; it may have queued the alert",
        )
    result = body["alerts"][0]
    status = result.get("status")
    if status != Outcome.QUEUED:
        return RelayOutcome(status or Outcome.REJECTED, body, error=result.get("error", ""))
    sms = body.get("sms", {})
    if sms.get(SmsState.DELIVERED):
        return RelayOutcome(Outcome.DELIVERED, body)
    if body.get("auth_failed"):
        return RelayOutcome(Outcome.AUTH_FAILED, body, error=body.get("last_error", "credentials refused"))
    if sms.get(SmsState.PENDING):
        return RelayOutcome(Outcome.UNREACHABLE, body, error=body.get("last_error", ""))
    return RelayOutcome(Outcome.FAILED, body, error="every SMS was refused by the gateway")


@dataclass(frozen=True)
class RelayAnswer:
    """What a relay answered a call (``status`` 0: it was not reached, ``error`` says why)."""

    status: int
    body: Any = None
    error: str = ""
    #: the request went out and its answer was lost: the relay may have acted on it
    unsure: bool = False


def call_relay(
    url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 10.0
) -> RelayAnswer:
    """One call to a relay's API (``heartbeat --relay``, ``ack --relay``): its status and JSON."""
    if not url.startswith(("http://", "https://")):
        return RelayAnswer(0, error=f"relay={url!r}: must start with http:// or https://")
    try:
        with httpx.Client(
            base_url=url.rstrip("/"),
            transport=default_transport(),
            timeout=httpx.Timeout(timeout, connect=5.0),
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"sslsms-notify/{__version__}"},
        ) as client:
            answer = client.request(method, path, json=body)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return RelayAnswer(0, error=f"relay {url}: {type(exc).__name__}: {exc}")
    except httpx.HTTPError as exc:
        return RelayAnswer(0, error=f"relay {url}: answer lost ({type(exc).__name__})", unsure=True)
    try:
        data = answer.json()
    except ValueError:
        data = {}
    error = data.get("error", "") if isinstance(data, dict) else ""
    if answer.status_code == 401:
        error = "the relay refused the token (SSLSMS_RELAY_TOKEN)"
    return RelayAnswer(
        answer.status_code, data, str(error or ("" if answer.is_success else answer.text[:200]))
    )
