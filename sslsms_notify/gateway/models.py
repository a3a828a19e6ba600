"""Typed requests and responses of the Push SMS API v3 (spec section 4)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .codes import ApiStatus, SmsStatus, SmsStatusMessage

SINGLE_PATH = "/api/v3/send-sms"
BULK_PATH = "/api/v3/send-sms/bulk"
DYNAMIC_PATH = "/api/v3/send-sms/dynamic"
MAX_RECIPIENTS_PER_REQUEST = 100  # spec: bulk MSISDN limit, dynamic SMS limit


@dataclass(frozen=True, slots=True)
class DynamicMessage:
    """One SMS of a dynamic request: its own number, text and csms_id."""

    msisdn: str
    text: str
    csms_id: str | None = None


@dataclass(frozen=True, slots=True)
class SmsInfo:
    """The gateway's word on one SMS (``smsinfo`` item), plus our reading of it."""

    msisdn: str
    sms_status: SmsStatus
    status_message: str = ""
    sms_type: str = ""
    sms_body: str = ""
    csms_id: str = ""
    reference_id: str = ""
    #: The gateway has this SMS: accepted now, or earlier (a retry's duplicate id).
    delivered: bool = False
    #: Delivered by an earlier attempt whose answer we never got.
    already_delivered: bool = False

    @property
    def ok(self) -> bool:
        return self.delivered


@dataclass(slots=True)
class SendResult:
    """The outcome of one ``send_*`` call, one :class:`SmsInfo` per input recipient."""

    status: str
    status_code: int
    error_message: str = ""
    messages: list[SmsInfo] = field(default_factory=list)
    #: HTTP requests made, retries included.
    requests: int = 0
    retries: int = 0

    @property
    def ok(self) -> bool:
        return self.status_code == ApiStatus.SUCCESS and all(m.delivered for m in self.messages)

    @property
    def delivered(self) -> list[SmsInfo]:
        return [m for m in self.messages if m.delivered]

    @property
    def failed(self) -> list[SmsInfo]:
        return [m for m in self.messages if not m.delivered]


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A parsed gateway answer, before we decide what it means for the caller."""

    status: str
    status_code: int
    error_message: str
    smsinfo: list[SmsInfo]


class ResponseFormatError(ValueError):
    """The body is not a gateway answer; ``detail`` says why (never the body's secrets)."""


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _to_str(value: Any) -> str:
    return "" if value is None else str(value)


def parse_smsinfo(item: Mapping[str, Any]) -> SmsInfo:
    status = SmsStatus.parse(item.get("sms_status"))
    return SmsInfo(
        msisdn=_to_str(item.get("msisdn")),
        sms_status=status,
        status_message=_to_str(item.get("status_message")),
        sms_type=_to_str(item.get("sms_type")),
        sms_body=_to_str(item.get("sms_body")),
        csms_id=_to_str(item.get("csms_id")),
        reference_id=_to_str(item.get("reference_id")),
        delivered=status is SmsStatus.SUCCESS,
    )


def parse_response(body: bytes) -> ApiResponse:
    """Read a gateway answer; tolerant of string codes and a missing ``smsinfo``."""
    if not body or not body.strip():
        raise ResponseFormatError("empty body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        snippet = body[:60].decode("utf-8", "replace").strip().replace("\n", " ")
        raise ResponseFormatError(f"not JSON (starts with {snippet!r})") from exc
    if not isinstance(data, dict):
        raise ResponseFormatError(f"JSON {type(data).__name__}, expected an object")
    code = _to_int(data.get("status_code"))
    status = _to_str(data.get("status")).strip().upper()
    if code is None:
        if status == "SUCCESS":
            code = ApiStatus.SUCCESS
        else:
            raise ResponseFormatError("no status_code in the answer")
    raw_info = data.get("smsinfo")
    if isinstance(raw_info, dict):
        raw_info = [raw_info]
    infos = [parse_smsinfo(i) for i in raw_info if isinstance(i, dict)] if isinstance(raw_info, list) else []
    return ApiResponse(
        status=status or ("SUCCESS" if code == ApiStatus.SUCCESS else "FAILED"),
        status_code=code,
        error_message=_to_str(data.get("error_message")),
        smsinfo=infos,
    )


def is_duplicate_id(info: SmsInfo) -> bool:
    return info.sms_status is SmsStatus.DUPLICATE and "cms id" in info.status_message.lower()


def mark_already_delivered(info: SmsInfo) -> SmsInfo:
    return replace(info, delivered=True, already_delivered=True)


def duplicate_of(first: SmsInfo) -> SmsInfo:
    """The entry for a number repeated in one call: it gets the first one's SMS."""
    return replace(
        first,
        sms_status=SmsStatus.DUPLICATE,
        status_message=SmsStatusMessage.DUPLICATE_MSISDN,
        reference_id=first.reference_id,
    )


def failed_info(msisdn: str, csms_id: str, text: str, message: str) -> SmsInfo:
    return SmsInfo(
        msisdn=msisdn,
        sms_status=SmsStatus.FAILED,
        status_message=message,
        sms_body=text,
        csms_id=csms_id,
    )


def chunked(items: list[Any], size: int = MAX_RECIPIENTS_PER_REQUEST) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
