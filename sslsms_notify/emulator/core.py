"""The gateway emulator's core: a request in, a response out, no I/O.

It implements section 4 of the spec with every status code of section 3, and
keeps an inbox of what it accepted. Frontends (the httpx transport, the HTTP
server) add waiting and dropped connections, which the core only asks for.

Order of checks (the spec gives none; this is the order a gateway behind an
API proxy applies): endpoint, method, client IP, body format, credentials,
request quota, TPS, required fields, recipients per request, ids, numbers,
length, duplicate ids.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

from ..gateway.codes import ApiStatus, SmsStatus, SmsStatusMessage
from ..gateway.ids import is_valid_csms_id
from ..gateway.models import BULK_PATH, DYNAMIC_PATH, MAX_RECIPIENTS_PER_REQUEST, SINGLE_PATH
from ..gateway.msisdn import InvalidMsisdnError, wire_msisdn
from ..gateway.text import MAX_SMS_CHARS, count_segments
from .faults import DEFAULT_ERROR_PAGE, Fault, FaultPlan

DEMO_API_TOKEN = "emulator-token-0123456789"
DEMO_SID = "EMULATOR"
DHAKA = timezone(timedelta(hours=6), "Asia/Dhaka")  # csms_id uniqueness is per gateway day
_ENDPOINTS = {SINGLE_PATH: "single", BULK_PATH: "bulk", DYNAMIC_PATH: "dynamic"}


@dataclass(frozen=True, slots=True)
class EmulatorRequest:
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    client_ip: str = "127.0.0.1"


@dataclass(slots=True)
class EmulatorResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    #: seconds the frontend waits before answering
    delay: float = 0.0
    #: "before": close without processing; "after": processed, then closed
    drop: str | None = None
    #: hold the connection this long, then close (the client's timeout fires first)
    hold: float | None = None
    #: the API status code in the body (counted by the emulator's stats)
    api_code: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """An SMS the emulated gateway accepted."""

    received_at: float
    msisdn: str
    text: str
    sms_type: str
    segments: int
    csms_id: str
    reference_id: str
    sid: str
    endpoint: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One readable line, as the CLI prints it."""
        when = datetime.fromtimestamp(self.received_at, UTC).astimezone().strftime("%H:%M:%S")
        body = self.text.replace("\n", " | ")
        return f"{when}  +{self.msisdn}  [{self.sms_type} {self.segments} seg, {self.endpoint}]  {body}"


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """A request as the gateway saw it, and what became of it (:meth:`GatewayEmulator.history`).

    Tests read this to write down exactly which requests a retry path made.
    """

    endpoint: str
    #: the numbers, as the request listed them (bulk: in order; dynamic: per SMS)
    msisdns: tuple[str, ...]
    #: a bulk's batch_csms_id, or each SMS's csms_id (single, dynamic)
    ids: tuple[str, ...]
    #: the API status code answered, or what a fault did: "http 502", "dropped",
    #: "timeout" (not processed), or "<code> then dropped" / "<code> then timeout"
    outcome: str
    #: when the gateway received it (its clock)
    received_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: requests the history keeps
HISTORY_SIZE = 10_000


@dataclass(slots=True)
class EmulatorConfig:
    #: api_token -> SIDs it may send as
    accounts: dict[str, set[str]] = field(default_factory=lambda: {DEMO_API_TOKEN: {DEMO_SID}})
    blacklisted_ips: set[str] = field(default_factory=set)
    blocked_msisdns: set[str] = field(default_factory=set)
    #: requests per second per token; more get 4031
    tps_limit: int | None = None
    #: requests per gateway day per token; more get 4029
    daily_quota: int | None = None


class GatewayEmulator:
    """A faithful SSL Push SMS v3 gateway in memory. Thread-safe."""

    def __init__(
        self, config: EmulatorConfig | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config or EmulatorConfig()
        self.clock = clock
        self.faults = FaultPlan(clock)
        self._lock = threading.RLock()
        self._inbox: list[InboxMessage] = []
        self._used_ids: dict[date, set[tuple[str, str]]] = {}
        self._recent: dict[str, deque[float]] = {}
        self._daily_requests: dict[tuple[str, date], int] = {}
        self._reference = 0
        self._subscribers: list[Callable[[InboxMessage], None]] = []
        self.requests: dict[int, int] = {}  # API status code -> count
        self._history: deque[GatewayRequest] = deque(maxlen=HISTORY_SIZE)

    # -- inspection ---------------------------------------------------------
    def messages(self, msisdn: str | None = None) -> list[InboxMessage]:
        with self._lock:
            if msisdn is None:
                return list(self._inbox)
            number = wire_msisdn(msisdn)
            return [m for m in self._inbox if m.msisdn == number]

    def history(self) -> list[GatewayRequest]:
        """The last requests the gateway saw, oldest first, faults included."""
        with self._lock:
            return list(self._history)

    def clear_inbox(self) -> None:
        with self._lock:
            self._inbox.clear()

    def reset(self) -> None:
        """Forget everything but the configuration: inbox, used ids, counters, faults."""
        with self._lock:
            self._inbox.clear()
            self._used_ids.clear()
            self._recent.clear()
            self._daily_requests.clear()
            self.requests.clear()
            self._history.clear()
            self.faults.clear()

    def subscribe(self, callback: Callable[[InboxMessage], None]) -> None:
        """Call ``callback`` for every accepted SMS (the CLI prints them live)."""
        self._subscribers.append(callback)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "accepted_sms": len(self._inbox),
                "requests": sum(self.requests.values()),
                "by_status_code": {str(k): v for k, v in sorted(self.requests.items())},
            }

    # -- the gateway --------------------------------------------------------
    def handle(self, request: EmulatorRequest) -> EmulatorResponse:
        fault = self.faults.take()
        delay = self.faults.latency
        response = self._handle(request, fault)
        response.delay = delay
        self._remember(request, response)
        return response

    def _handle(self, request: EmulatorRequest, fault: Fault | None) -> EmulatorResponse:
        if fault is not None:
            if fault.kind == "http_error":
                page = fault.body or DEFAULT_ERROR_PAGE.format(status=fault.http_status)
                return EmulatorResponse(fault.http_status, page.encode(), {"content-type": "text/html"})
            if fault.kind == "drop" and not fault.after_processing:
                return EmulatorResponse(0, b"", drop="before")
            if fault.kind == "timeout" and not fault.after_processing:
                return EmulatorResponse(0, b"", hold=fault.hold)
            if fault.kind == "api_code":
                return self._fail(fault.code)
        with self._lock:
            response = self._process(request)
            code = response.api_code if response.api_code is not None else response.status
            self.requests[code] = self.requests.get(code, 0) + 1
        if fault is not None and fault.kind == "drop":
            response.drop = "after"
        if fault is not None and fault.kind == "timeout":  # processed, then the answer never comes
            response.hold = fault.hold
        return response

    def _remember(self, request: EmulatorRequest, response: EmulatorResponse) -> None:
        endpoint = _ENDPOINTS.get(request.path.rstrip("/") or "/", request.path)
        params = self._params(request) if request.method.upper() == "GET" or request.body else {}
        numbers: tuple[str, ...] = ()
        ids: tuple[str, ...] = ()
        if isinstance(params, dict):
            if endpoint == "dynamic" and isinstance(params.get("sms"), list):
                sms = [m for m in params["sms"] if isinstance(m, dict)]
                numbers = tuple(str(m.get("msisdn", "")) for m in sms)
                ids = tuple(str(m.get("csms_id", "")) for m in sms)
            else:
                raw = params.get("msisdn")
                numbers = tuple(str(n) for n in raw) if isinstance(raw, list) else (str(raw or ""),)
                ids = (str(params.get("batch_csms_id") or params.get("csms_id") or ""),)
        if response.status and response.api_code is None and response.status >= 400:
            outcome = f"http {response.status}"
        elif response.api_code is None:
            outcome = "timeout" if response.hold is not None else "dropped"
        else:
            outcome = str(response.api_code)
            if response.drop:
                outcome += " then dropped"
            elif response.hold is not None:
                outcome += " then timeout"
        with self._lock:
            self._history.append(GatewayRequest(endpoint, numbers, ids, outcome, self.clock()))

    def _answer(
        self,
        code: int,
        smsinfo: list[dict[str, Any]] | None = None,
        *,
        message: str = "",
        http_status: int = 200,
    ) -> EmulatorResponse:
        ok = code == ApiStatus.SUCCESS
        payload = {
            "status": "SUCCESS" if ok else "FAILED",
            "status_code": code,
            "error_message": "" if ok else (message or ApiStatus(code).meaning),
            "smsinfo": smsinfo or [],
        }
        body = json.dumps(payload, ensure_ascii=False).encode()
        return EmulatorResponse(http_status, body, api_code=code)

    def _fail(self, code: int, detail: str = "", **kwargs: Any) -> EmulatorResponse:
        known = ApiStatus.lookup(code)
        message = known.meaning if known else "Unknown Error"
        return self._answer(code, message=f"{message}: {detail}" if detail else message, **kwargs)

    def _process(self, request: EmulatorRequest) -> EmulatorResponse:
        endpoint = _ENDPOINTS.get(request.path.rstrip("/") or "/")
        if endpoint is None:
            return self._fail(ApiStatus.ENDPOINT_NOT_FOUND, request.path, http_status=404)
        method = request.method.upper()
        if method not in (("GET", "POST") if endpoint == "single" else ("POST",)):
            return self._fail(ApiStatus.INVALID_REQUEST_FORMAT, f"{method} not allowed", http_status=405)
        if request.client_ip in self.config.blacklisted_ips:
            return self._fail(ApiStatus.IP_BLACKLISTED)

        params = self._params(request)
        if isinstance(params, EmulatorResponse):
            return params
        for name in ("api_token", "sid"):
            if not params.get(name):
                return self._fail(ApiStatus.REQUIRED_PARAMETER_MISSING, name)
        token, sid = str(params["api_token"]), str(params["sid"])
        if token not in self.config.accounts:
            return self._fail(ApiStatus.UNAUTHORIZED)
        if sid not in self.config.accounts[token]:
            return self._fail(ApiStatus.SID_NOT_PERMITTED)

        now = self.clock()
        today = datetime.fromtimestamp(now, DHAKA).date()
        limited = self._rate_limits(token, now, today)
        if limited is not None:
            return limited

        if endpoint == "single":
            return self._single(params, sid, now, today)
        if endpoint == "bulk":
            return self._bulk(params, sid, now, today)
        return self._dynamic(params, sid, now, today)

    def _params(self, request: EmulatorRequest) -> dict[str, Any] | EmulatorResponse:
        if request.method.upper() == "GET":
            return dict(request.query)
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type.lower():
            return self._fail(ApiStatus.INVALID_REQUEST_FORMAT, "content type must be application/json")
        try:
            data = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            return self._fail(ApiStatus.INVALID_REQUEST_FORMAT, "body is not valid JSON")
        if not isinstance(data, dict):
            return self._fail(ApiStatus.INVALID_REQUEST_FORMAT, "body must be a JSON object")
        return data

    def _rate_limits(self, token: str, now: float, today: date) -> EmulatorResponse | None:
        quota = self.config.daily_quota
        if quota is not None:
            used = self._daily_requests.get((token, today), 0)
            if used >= quota:
                return self._fail(ApiStatus.TOO_MANY_REQUESTS)
            self._daily_requests[(token, today)] = used + 1
        tps = self.config.tps_limit
        if tps is not None:
            recent = self._recent.setdefault(token, deque())
            while recent and recent[0] <= now - 1.0:
                recent.popleft()
            if len(recent) >= tps:
                return self._fail(ApiStatus.TPS_EXCEEDED)
            recent.append(now)
        return None

    # -- per endpoint -------------------------------------------------------
    def _ids_today(self, today: date) -> set[tuple[str, str]]:
        if today not in self._used_ids:
            for old in [d for d in self._used_ids if d < today]:
                del self._used_ids[old]
            self._used_ids[today] = set()
        return self._used_ids[today]

    def _normalize(self, raw: Any) -> tuple[str | None, str | None]:
        """(normalized number, None) or (None, status message)."""
        try:
            number = wire_msisdn(raw)
        except InvalidMsisdnError:
            return None, SmsStatusMessage.INVALID_MSISDN
        if number in self.config.blocked_msisdns:
            return None, SmsStatusMessage.BLOCKED_MSISDN
        return number, None

    def _accept(
        self, number: str, text: str, csms_id: str, sid: str, now: float, endpoint: str
    ) -> dict[str, Any]:
        self._reference += 1
        reference = f"{int(now):x}{self._reference:011d}"[-19:]
        info = count_segments(text)
        message = InboxMessage(
            now, number, text, info.sms_type, info.segments, csms_id, reference, sid, endpoint
        )
        self._inbox.append(message)
        for callback in self._subscribers:
            with contextlib.suppress(Exception):  # a printing callback must not break the gateway
                callback(message)
        return self._info(SmsStatus.SUCCESS, SmsStatusMessage.SUCCESS, number, text, csms_id, reference)

    @staticmethod
    def _info(
        status: SmsStatus, message: str, msisdn: str, text: str, csms_id: str, reference: str = ""
    ) -> dict[str, Any]:
        return {
            "sms_status": str(status),
            "status_message": str(message),
            "msisdn": msisdn,
            "sms_type": count_segments(text).sms_type if text else "EN",
            "sms_body": text,
            "csms_id": csms_id,
            "reference_id": reference,
        }

    @staticmethod
    def _missing(params: Mapping[str, Any], *names: str) -> str | None:
        for name in names:
            value = params.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                return name
        return None

    def _single(self, params: dict[str, Any], sid: str, now: float, today: date) -> EmulatorResponse:
        missing = self._missing(params, "msisdn", "sms", "csms_id")
        if missing:
            return self._fail(ApiStatus.REQUIRED_PARAMETER_MISSING, missing)
        text, csms_id = params["sms"], params["csms_id"]
        if not isinstance(text, str):
            return self._fail(ApiStatus.INVALID_REQUEST_FORMAT, "sms must be a string")
        if not is_valid_csms_id(csms_id):
            return self._fail(ApiStatus.INVALID_CSMS_ID)
        number, problem = self._normalize(params["msisdn"])
        if problem == SmsStatusMessage.BLOCKED_MSISDN:
            return self._fail(ApiStatus.BLOCKED_MSISDN)
        if number is None:
            return self._fail(ApiStatus.INVALID_MSISDN)
        if len(text) > MAX_SMS_CHARS:
            return self._fail(ApiStatus.MESSAGE_LENGTH_EXCEEDED)
        used = self._ids_today(today)
        if (sid, csms_id) in used:
            return self._fail(ApiStatus.DUPLICATE_CSMS_ID)
        used.add((sid, csms_id))
        return self._answer(ApiStatus.SUCCESS, [self._accept(number, text, csms_id, sid, now, "single")])

    def _bulk(self, params: dict[str, Any], sid: str, now: float, today: date) -> EmulatorResponse:
        missing = self._missing(params, "msisdn", "sms", "batch_csms_id")
        if missing:
            return self._fail(ApiStatus.REQUIRED_PARAMETER_MISSING, missing)
        numbers, text, batch_id = params["msisdn"], params["sms"], params["batch_csms_id"]
        if not isinstance(numbers, list) or not isinstance(text, str):
            return self._fail(ApiStatus.INVALID_REQUEST_FORMAT, "msisdn must be an array, sms a string")
        if not numbers:
            return self._fail(ApiStatus.REQUIRED_PARAMETER_MISSING, "msisdn")
        if len(numbers) > MAX_RECIPIENTS_PER_REQUEST:
            return self._fail(ApiStatus.LIMIT_EXCEEDED)
        if not is_valid_csms_id(batch_id):
            return self._fail(ApiStatus.INVALID_CSMS_ID)
        if len(text) > MAX_SMS_CHARS:
            return self._fail(ApiStatus.MESSAGE_LENGTH_EXCEEDED)
        used = self._ids_today(today)
        if (sid, batch_id) in used:
            return self._fail(ApiStatus.DUPLICATE_CSMS_ID)
        infos, seen, accepted = [], set(), 0
        for raw in numbers:
            number, problem = self._normalize(raw)
            shown = number or str(raw)
            if problem:
                infos.append(self._info(SmsStatus.INVALID, problem, shown, text, batch_id))
            elif number in seen:
                infos.append(
                    self._info(
                        SmsStatus.DUPLICATE,
                        SmsStatusMessage.DUPLICATE_MSISDN,
                        shown,
                        text,
                        batch_id,
                    )
                )
            elif number is not None:
                seen.add(number)
                infos.append(self._accept(number, text, batch_id, sid, now, "bulk"))
                accepted += 1
        if not accepted:
            return self._answer(ApiStatus.INVALID_MESSAGE_DATA, infos, message="Invalid message data")
        used.add((sid, batch_id))
        return self._answer(ApiStatus.SUCCESS, infos)

    def _dynamic(self, params: dict[str, Any], sid: str, now: float, today: date) -> EmulatorResponse:
        missing = self._missing(params, "sms")
        if missing:
            return self._fail(ApiStatus.REQUIRED_PARAMETER_MISSING, missing)
        items = params["sms"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return self._fail(ApiStatus.INVALID_REQUEST_FORMAT, "sms must be an array of objects")
        if not items:
            return self._fail(ApiStatus.REQUIRED_PARAMETER_MISSING, "sms")
        if len(items) > MAX_RECIPIENTS_PER_REQUEST:
            return self._fail(ApiStatus.LIMIT_EXCEEDED)
        for position, item in enumerate(items):
            missing = self._missing(item, "msisdn", "text", "csms_id")
            if missing:
                return self._fail(ApiStatus.REQUIRED_PARAMETER_MISSING, f"sms[{position}].{missing}")
        used = self._ids_today(today)
        infos, accepted, seen = [], 0, set()
        for item in items:
            text, csms_id = item["text"], item["csms_id"]
            text = text if isinstance(text, str) else str(text)
            number, problem = self._normalize(item["msisdn"])
            shown = number or str(item["msisdn"])
            if number is not None and number in seen:
                # Spec 3.2: DUPLICATE / "Duplicate MSISDN": "MSISDN is duplicate on the same
                # request." Not sent; its csms_id stays unused.
                infos.append(
                    self._info(
                        SmsStatus.DUPLICATE, SmsStatusMessage.DUPLICATE_MSISDN, shown, text, str(csms_id)
                    )
                )
                continue
            if number is not None:
                seen.add(number)
            if not is_valid_csms_id(csms_id):
                infos.append(
                    self._info(
                        SmsStatus.INVALID,
                        SmsStatusMessage.INVALID_CSMS_ID,
                        shown,
                        text,
                        str(csms_id),
                    )
                )
            elif problem:
                infos.append(self._info(SmsStatus.INVALID, problem, shown, text, csms_id))
            elif len(text) > MAX_SMS_CHARS:
                infos.append(
                    self._info(
                        SmsStatus.INVALID,
                        SmsStatusMessage.MESSAGE_LENGTH_EXCEEDED,
                        shown,
                        text,
                        csms_id,
                    )
                )
            elif (sid, csms_id) in used:
                infos.append(
                    self._info(
                        SmsStatus.DUPLICATE,
                        SmsStatusMessage.DUPLICATE_CSMS_ID,
                        shown,
                        text,
                        csms_id,
                    )
                )
            else:
                used.add((sid, csms_id))
                infos.append(self._accept(number, text, csms_id, sid, now, "dynamic"))  # type: ignore[arg-type]
                accepted += 1
        if not accepted:
            return self._answer(ApiStatus.INVALID_MESSAGE_DATA, infos, message="Invalid message data")
        return self._answer(ApiStatus.SUCCESS, infos)
