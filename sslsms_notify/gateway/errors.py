"""Exceptions raised by the gateway client.

One base, :class:`GatewayError`, carrying the API ``status_code``; the
subclasses say what the caller can do about it (fix credentials, fix input,
slow down, wait for the gateway, check the network).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .codes import ApiStatus

if TYPE_CHECKING:
    from .models import SendResult


class GatewayError(Exception):
    """A request the gateway (or the path to it) did not accept as a whole."""

    #: Whether sending the same request again (same csms_id) may succeed.
    retryable: bool = False
    #: An earlier attempt of the same request, within the same call, may have reached the
    #: gateway and got no API status back: whatever this answer says, that one's outcome is unknown.
    earlier_attempt_unknown: bool = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        result: SendResult | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.http_status = http_status
        self.retry_after = retry_after
        #: Per-recipient details when the gateway gave them (e.g. 4028).
        self.result = result

    @property
    def api_status(self) -> ApiStatus | None:
        return ApiStatus.lookup(self.status_code) if self.status_code is not None else None

    def __str__(self) -> str:
        code = f"[{self.status_code}] " if self.status_code is not None else ""
        return f"{code}{self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status_code={self.status_code!r}, message={self.message!r})"


class AuthError(GatewayError):
    """4001-4003: token, SID or client IP not accepted. Fix configuration."""


class BadRequestError(GatewayError):
    """4004, 4005, 4020, 4022, 4025-4028: the request itself is wrong."""


class DuplicateCsmsIdError(BadRequestError):
    """4023 on a first attempt: the csms_id was already used today."""


class RateLimitError(GatewayError):
    """4029, 4030, 4031: too many requests, recipients or transactions."""


class ServerError(GatewayError):
    """5000 or an HTTP 5xx: the gateway failed; the same request may succeed later."""

    retryable = True


class TransportError(GatewayError):
    """Timeouts, refused or dropped connections.

    ``request_sent`` is False only when no attempt of the request got as far as a
    connection (refused, unresolvable, connect timeout): then the gateway surely has
    nothing. Otherwise the outcome is unknown.
    """

    retryable = True

    def __init__(self, message: str, *, request_sent: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.request_sent = request_sent


class MalformedResponseError(GatewayError):
    """The gateway answered something we cannot read (HTML, empty, not JSON).

    Retryable: retries reuse the csms_id, so a request the gateway did accept
    comes back as "Duplicate CMS ID", which counts as delivered.
    """

    retryable = True


class _RetryableRateLimit(RateLimitError):
    retryable = True


class TooManyRequestsError(_RetryableRateLimit):
    """4029: the account's request quota is used up for now."""


class TpsExceededError(_RetryableRateLimit):
    """4031: more transactions per second than the account allows."""


class RecipientLimitError(RateLimitError):
    """4030: more than 100 numbers in one request (not retryable as is)."""


_BY_CODE: dict[int, type[GatewayError]] = {
    4001: AuthError,
    4002: AuthError,
    4003: AuthError,
    4004: BadRequestError,
    4005: BadRequestError,
    4020: BadRequestError,
    4022: BadRequestError,
    4023: DuplicateCsmsIdError,
    4025: BadRequestError,
    4026: BadRequestError,
    4027: BadRequestError,
    4028: BadRequestError,
    4029: TooManyRequestsError,
    4030: RecipientLimitError,
    4031: TpsExceededError,
    5000: ServerError,
}


def error_for_code(
    status_code: int,
    message: str,
    *,
    http_status: int | None = None,
    retry_after: float | None = None,
    result: SendResult | None = None,
) -> GatewayError:
    """Build the exception that matches an API status code."""
    if status_code in _BY_CODE:
        cls = _BY_CODE[status_code]
    elif 500 <= status_code < 600:
        cls = ServerError
    else:
        cls = GatewayError
    if not message:
        known = ApiStatus.lookup(status_code)
        message = known.meaning if known else "gateway error"
    return cls(
        message,
        status_code=status_code,
        http_status=http_status,
        retry_after=retry_after,
        result=result,
    )
