"""The client without I/O: a ``send_*`` call into HTTP requests, their answers into one result.

Both :class:`GatewayClient` and :class:`AsyncGatewayClient` drive a
:class:`SendPlan`; only the waiting differs. Keeping the rules here means the
sync and async clients cannot drift apart.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .codes import ApiStatus, SmsStatus
from .errors import (
    AuthError,
    BadRequestError,
    GatewayError,
    MalformedResponseError,
    ServerError,
    TooManyRequestsError,
    error_for_code,
)
from .ids import CSMS_ID_MAX_LENGTH, _base62, check_csms_id, new_csms_id
from .models import (
    BULK_PATH,
    DYNAMIC_PATH,
    MAX_RECIPIENTS_PER_REQUEST,
    SINGLE_PATH,
    ApiResponse,
    DynamicMessage,
    ResponseFormatError,
    SendResult,
    SmsInfo,
    chunked,
    duplicate_of,
    failed_info,
    is_duplicate_id,
    mark_already_delivered,
    parse_response,
)
from .msisdn import wire_msisdn
from .text import check_text

Kind = Literal["single", "bulk", "dynamic"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One recipient of the caller's input, at its position in that input."""

    index: int
    msisdn: str
    text: str
    csms_id: str


@dataclass(slots=True)
class Call:
    """One HTTP request of a plan."""

    kind: Kind
    method: str
    path: str
    payload: dict[str, Any]
    entries: list[Entry]
    batch_csms_id: str | None = None
    #: an attempt of it may have reached the gateway (anything but a failed connect)
    maybe_reached: bool = False
    #: an attempt of it may have reached the gateway and got no API status back (its outcome is unknown)
    unknown: bool = False


@dataclass(slots=True)
class SendPlan:
    """A ``send_*`` call as HTTP requests, collecting one answer per recipient."""

    kind: Kind
    size: int
    calls: list[Call]
    #: caller index -> index of the first occurrence of the same number
    repeats: dict[int, int] = field(default_factory=dict)
    infos: dict[int, SmsInfo] = field(default_factory=dict)
    errors: list[GatewayError] = field(default_factory=list)
    requests: int = 0
    retries: int = 0

    def record(self, call: Call, answer: ApiResponse) -> None:
        """Each entry's status from an accepted request's answer.

        Spec 4.x.4: smsinfo is "one object for each SMS", carrying the client's msisdn
        (bulk) or csms_id (dynamic). An answer with no smsinfo at all (seen on real
        gateways) accepted the request as a whole; an entry missing from a list that
        names others has no known status and is not counted as delivered.
        """
        by_key: dict[str, SmsInfo] = {}
        for info in answer.smsinfo:
            by_key.setdefault(_answer_key(call, info), info)
        for position, entry in enumerate(call.entries):
            key = entry.csms_id if call.kind == "dynamic" else entry.msisdn
            found: SmsInfo | None = by_key.get(key)
            if found is None and call.kind == "single" and position < len(answer.smsinfo):
                found = answer.smsinfo[position]
            if found is None and not answer.smsinfo:
                found = SmsInfo(
                    msisdn=entry.msisdn,
                    sms_status=SmsStatus.SUCCESS,
                    status_message="Success (no smsinfo in answer)",
                    sms_body=entry.text,
                    csms_id=call.batch_csms_id or entry.csms_id,
                    delivered=True,
                )
            if found is None:
                found = SmsInfo(
                    msisdn=entry.msisdn,
                    sms_status=SmsStatus.UNKNOWN,
                    status_message="no status for this SMS in the gateway's answer",
                    sms_body=entry.text,
                    csms_id=call.batch_csms_id or entry.csms_id,
                )
            self.infos[entry.index] = found

    def record_error(self, call: Call, error: GatewayError) -> None:
        self.errors.append(error)
        details: dict[str, SmsInfo] = {}
        if error.result is not None:
            details = {m.csms_id if call.kind == "dynamic" else m.msisdn: m for m in error.result.messages}
        for entry in call.entries:
            key = entry.csms_id if call.kind == "dynamic" else entry.msisdn
            self.infos[entry.index] = details.get(key) or failed_info(
                entry.msisdn, call.batch_csms_id or entry.csms_id, entry.text, str(error)
            )

    def result(self) -> SendResult:
        messages: list[SmsInfo] = []
        for index in range(self.size):
            if index in self.repeats:
                messages.append(duplicate_of(self.infos[self.repeats[index]]))
            else:
                messages.append(self.infos[index])
        if self.errors and len(self.errors) == len(self.calls):
            first = self.errors[0]
            first.result = SendResult(
                status="FAILED",
                status_code=first.status_code or 0,
                error_message=first.message,
                messages=messages,
                requests=self.requests,
                retries=self.retries,
            )
            raise first
        if self.errors:
            first = self.errors[0]
            return SendResult(
                "FAILED",
                first.status_code or 0,
                first.message,
                messages,
                self.requests,
                self.retries,
            )
        return SendResult("SUCCESS", ApiStatus.SUCCESS, "", messages, self.requests, self.retries)


def _answer_key(call: Call, info: SmsInfo) -> str:
    """How an smsinfo entry names its SMS: csms_id (dynamic) or the number, normalized as we sent it."""
    if call.kind == "dynamic":
        return info.csms_id
    try:
        return wire_msisdn(info.msisdn)
    except ValueError:
        return info.msisdn


def _chunk_batch_id(batch_csms_id: str, chunk: int, chunks: int) -> str:
    if chunks == 1:
        return batch_csms_id
    # Deterministic per chunk, so a retried call reuses the same ids.
    return batch_csms_id[: CSMS_ID_MAX_LENGTH - 2] + _base62(chunk, 2)


def plan_single(msisdn: str, text: str, csms_id: str | None, method: str) -> SendPlan:
    number = wire_msisdn(msisdn)
    check_text(text, field="text")
    csms_id = check_csms_id(csms_id) if csms_id is not None else new_csms_id()
    method = method.upper()
    if method not in ("GET", "POST"):
        raise ValueError(f"method must be GET or POST, not {method!r}")
    entry = Entry(0, number, text, csms_id)
    payload = {"msisdn": number, "sms": text, "csms_id": csms_id}
    return SendPlan("single", 1, [Call("single", method, SINGLE_PATH, payload, [entry])])


def plan_bulk(msisdns: Sequence[str], text: str, batch_csms_id: str | None) -> SendPlan:
    if isinstance(msisdns, str):
        raise ValueError("msisdns must be a list of numbers, not one string")
    if not msisdns:
        raise ValueError("msisdns must contain at least one number")
    check_text(text, field="text")
    batch_csms_id = (
        check_csms_id(batch_csms_id, field="batch_csms_id") if batch_csms_id is not None else new_csms_id()
    )
    numbers = [wire_msisdn(m, field=f"msisdns[{i}]") for i, m in enumerate(msisdns)]
    first_index: dict[str, int] = {}
    repeats: dict[int, int] = {}
    entries: list[Entry] = []
    for index, number in enumerate(numbers):
        if number in first_index:
            repeats[index] = first_index[number]
            continue
        first_index[number] = index
        entries.append(Entry(index, number, text, batch_csms_id))
    chunks = list(chunked(entries, MAX_RECIPIENTS_PER_REQUEST))
    calls = []
    for position, chunk in enumerate(chunks):
        chunk_id = _chunk_batch_id(batch_csms_id, position, len(chunks))
        payload = {"msisdn": [e.msisdn for e in chunk], "sms": text, "batch_csms_id": chunk_id}
        calls.append(Call("bulk", "POST", BULK_PATH, payload, chunk, batch_csms_id=chunk_id))
    return SendPlan("bulk", len(numbers), calls, repeats=repeats)


def _as_message(item: DynamicMessage | tuple[str, str] | Mapping[str, Any], index: int) -> DynamicMessage:
    if isinstance(item, DynamicMessage):
        return item
    if isinstance(item, Mapping):
        return DynamicMessage(
            str(item.get("msisdn", "")), item.get("text", item.get("sms", "")), item.get("csms_id")
        )
    if isinstance(item, tuple | list) and len(item) in (2, 3):
        return DynamicMessage(*item)
    raise ValueError(f"messages[{index}] must be (msisdn, text) or a DynamicMessage")


def plan_dynamic(messages: Iterable[DynamicMessage | tuple[str, str]]) -> SendPlan:
    items = [_as_message(m, i) for i, m in enumerate(messages)]
    if not items:
        raise ValueError("messages must contain at least one message")
    entries: list[Entry] = []
    seen_ids: set[str] = set()
    for index, item in enumerate(items):
        number = wire_msisdn(item.msisdn, field=f"messages[{index}].msisdn")
        check_text(item.text, field=f"messages[{index}].text")
        csms_id = (
            check_csms_id(item.csms_id, field=f"messages[{index}].csms_id")
            if item.csms_id is not None
            else new_csms_id()
        )
        if csms_id in seen_ids:
            raise ValueError(f"messages[{index}].csms_id {csms_id!r} is used twice in one call")
        seen_ids.add(csms_id)
        entries.append(Entry(index, number, item.text, csms_id))
    # Spec 3.2: "Duplicate MSISDN" is "MSISDN is duplicate on the same request", and
    # such an SMS is not sent. Several texts for one number go in successive requests.
    layers: list[list[Entry]] = []
    depth: dict[str, int] = {}
    for entry in entries:
        level = depth.get(entry.msisdn, 0)
        depth[entry.msisdn] = level + 1
        if level == len(layers):
            layers.append([])
        layers[level].append(entry)
    calls = []
    for layer in layers:
        for chunk in chunked(layer, MAX_RECIPIENTS_PER_REQUEST):
            payload = {"sms": [{"msisdn": e.msisdn, "text": e.text, "csms_id": e.csms_id} for e in chunk]}
            calls.append(Call("dynamic", "POST", DYNAMIC_PATH, payload, chunk))
    return SendPlan("dynamic", len(items), calls)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Read ``Retry-After`` as seconds or as an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _already_delivered(call: Call, answer: ApiResponse) -> ApiResponse | None:
    """On a retry, "Duplicate CMS ID" means our earlier attempt got through."""
    code = answer.status_code
    if code == ApiStatus.DUPLICATE_CSMS_ID:
        infos = [
            SmsInfo(
                msisdn=e.msisdn,
                sms_status=SmsStatus.DUPLICATE,
                status_message="Duplicate CMS ID",
                sms_body=e.text,
                csms_id=call.batch_csms_id or e.csms_id,
                delivered=True,
                already_delivered=True,
            )
            for e in call.entries
        ]
        return ApiResponse("SUCCESS", ApiStatus.SUCCESS, "", infos)
    if code in (ApiStatus.SUCCESS, ApiStatus.INVALID_MESSAGE_DATA) and answer.smsinfo:
        infos = [mark_already_delivered(i) if is_duplicate_id(i) else i for i in answer.smsinfo]
        if any(i.delivered for i in infos):
            return ApiResponse("SUCCESS", ApiStatus.SUCCESS, "", infos)
    return None


def read_answer(
    call: Call, http_status: int, headers: Mapping[str, str], body: bytes, *, is_retry: bool
) -> ApiResponse:
    """The gateway's answer to ``call``, or the :class:`GatewayError` it amounts to."""
    retry_after = retry_after_seconds(headers.get("retry-after"))
    try:
        answer = parse_response(body)
    except ResponseFormatError as exc:
        if http_status == 429:
            raise TooManyRequestsError(
                f"HTTP 429 from gateway ({exc})", http_status=429, retry_after=retry_after
            ) from None
        if http_status >= 500:
            raise ServerError(
                f"HTTP {http_status} from gateway ({exc})",
                http_status=http_status,
                retry_after=retry_after,
            ) from None
        if 400 <= http_status < 500:
            raise BadRequestError(
                f"HTTP {http_status} and no gateway answer ({exc}); check base_url",
                http_status=http_status,
            ) from None
        raise MalformedResponseError(f"unreadable gateway answer ({exc})", http_status=http_status) from None
    if is_retry:
        recovered = _already_delivered(call, answer)
        if recovered is not None:
            return recovered
    if answer.status_code == ApiStatus.SUCCESS:
        return answer
    details = None
    if answer.smsinfo:
        details = SendResult(answer.status, answer.status_code, answer.error_message, answer.smsinfo)
    raise error_for_code(
        answer.status_code,
        answer.error_message,
        http_status=http_status,
        retry_after=retry_after,
        result=details,
    )


def stops_the_plan(error: GatewayError) -> bool:
    """Errors that every other request of the call would hit too."""
    return isinstance(error, AuthError)
