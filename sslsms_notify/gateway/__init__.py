"""The wire: exactly what the Push SMS API v3 spec defines, and nothing of alerting."""

from .client import DEFAULT_BASE_URL, AsyncGatewayClient, GatewayClient
from .codes import ApiStatus, SmsStatus, SmsStatusMessage
from .errors import (
    AuthError,
    BadRequestError,
    DuplicateCsmsIdError,
    GatewayError,
    MalformedResponseError,
    RateLimitError,
    RecipientLimitError,
    ServerError,
    TooManyRequestsError,
    TpsExceededError,
    TransportError,
)
from .ids import is_valid_csms_id, new_csms_id
from .models import DynamicMessage, SendResult, SmsInfo
from .msisdn import InvalidMsisdnError, normalize_msisdn, wire_msisdn
from .retry import RetryPolicy
from .text import Encoding, SegmentInfo, count_segments, truncate_to_segments

__all__ = [
    "DEFAULT_BASE_URL",
    "ApiStatus",
    "AsyncGatewayClient",
    "AuthError",
    "BadRequestError",
    "DuplicateCsmsIdError",
    "DynamicMessage",
    "Encoding",
    "GatewayClient",
    "GatewayError",
    "InvalidMsisdnError",
    "MalformedResponseError",
    "RateLimitError",
    "RecipientLimitError",
    "RetryPolicy",
    "SegmentInfo",
    "SendResult",
    "ServerError",
    "SmsInfo",
    "SmsStatus",
    "SmsStatusMessage",
    "TooManyRequestsError",
    "TpsExceededError",
    "TransportError",
    "count_segments",
    "is_valid_csms_id",
    "new_csms_id",
    "normalize_msisdn",
    "truncate_to_segments",
    "wire_msisdn",
]
