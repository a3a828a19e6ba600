"""Status codes of the Push SMS API v3 (spec sections 3.1 and 3.2)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ApiStatus(IntEnum):
    """API status codes (section 3.1): the outcome of a whole request."""

    SUCCESS = 200
    UNAUTHORIZED = 4001
    SID_NOT_PERMITTED = 4002
    IP_BLACKLISTED = 4003
    ENDPOINT_NOT_FOUND = 4004
    INVALID_REQUEST_FORMAT = 4005
    INVALID_CSMS_ID = 4020
    REQUIRED_PARAMETER_MISSING = 4022
    DUPLICATE_CSMS_ID = 4023
    INVALID_MSISDN = 4025
    BLOCKED_MSISDN = 4026
    MESSAGE_LENGTH_EXCEEDED = 4027
    INVALID_MESSAGE_DATA = 4028
    TOO_MANY_REQUESTS = 4029
    LIMIT_EXCEEDED = 4030
    TPS_EXCEEDED = 4031
    UNKNOWN_ERROR = 5000

    @property
    def meaning(self) -> str:
        return _MEANINGS[self][0]

    @property
    def description(self) -> str:
        return _MEANINGS[self][1]

    @classmethod
    def lookup(cls, code: int) -> ApiStatus | None:
        try:
            return cls(code)
        except ValueError:
            return None


_MEANINGS: dict[ApiStatus, tuple[str, str]] = {
    ApiStatus.SUCCESS: ("SUCCESS", "Successful"),
    ApiStatus.UNAUTHORIZED: ("Unauthorized", "Invalid API token"),
    ApiStatus.SID_NOT_PERMITTED: (
        "SID/Stakeholder is not permitted",
        "Stakeholder/SID is not permitted to send SMS.",
    ),
    ApiStatus.IP_BLACKLISTED: ("IP Blacklisted", "Client IP is blacklisted in SSL API gateway."),
    ApiStatus.ENDPOINT_NOT_FOUND: ("End point Not Found", "Invalid API URL."),
    ApiStatus.INVALID_REQUEST_FORMAT: (
        "Invalid request format",
        "Invalid content type or is not valid json.",
    ),
    ApiStatus.INVALID_CSMS_ID: ("Invalid CSMS ID", "CSMS ID is not valid."),
    ApiStatus.REQUIRED_PARAMETER_MISSING: (
        "Required Parameter Missing",
        "When any mandatory field has not been filled in the request parameters.",
    ),
    ApiStatus.DUPLICATE_CSMS_ID: ("Duplicate CMS ID", "CSMS ID is duplicate in the same day."),
    ApiStatus.INVALID_MSISDN: ("Invalid MSISDN", "MSISDN is invalid."),
    ApiStatus.BLOCKED_MSISDN: ("Blocked MSISDN", "MSISDN is blocked."),
    ApiStatus.MESSAGE_LENGTH_EXCEEDED: (
        "Message length exceeded",
        "Maximum message length exceeded.",
    ),
    ApiStatus.INVALID_MESSAGE_DATA: (
        "Invalid message data",
        "No SMS is success on bulk or dynamic request.",
    ),
    ApiStatus.TOO_MANY_REQUESTS: ("Too many requests", "API Request limit exceeded"),
    ApiStatus.LIMIT_EXCEEDED: ("Limit Exceed", "Max msisdn exceed for one request"),
    ApiStatus.TPS_EXCEEDED: ("TPS Exceeded", "The limit of TPS exceeds"),
    ApiStatus.UNKNOWN_ERROR: ("Unknown Error", "Error for undefined reason"),
}


class SmsStatus(StrEnum):
    """Per-SMS status (section 3.2)."""

    SUCCESS = "SUCCESS"
    INVALID = "INVALID"
    DUPLICATE = "DUPLICATE"
    #: Not from the spec: a recipient whose request failed as a whole.
    FAILED = "FAILED"
    #: Not from the spec: the gateway answered with a status we do not know.
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, value: object) -> SmsStatus:
        text = str(value or "").strip().upper()
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN


class SmsStatusMessage(StrEnum):
    """The per-SMS status messages of section 3.2."""

    SUCCESS = "Success"
    INVALID_MSISDN = "Invalid MSISDN"
    MESSAGE_LENGTH_EXCEEDED = "Message length exceeded"
    INVALID_CSMS_ID = "Invalid CSMS ID"
    DUPLICATE_CSMS_ID = "Duplicate CMS ID"
    DUPLICATE_MSISDN = "Duplicate MSISDN"
    #: The spec lists 4026 as an API code only; a blocked number inside a bulk
    #: request is reported as INVALID with this message.
    BLOCKED_MSISDN = "Blocked MSISDN"
