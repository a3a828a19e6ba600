"""Sync and async clients for the three v3 endpoints, on httpx.

Each client owns one httpx connection pool. ``transport=`` swaps the network
for anything httpx accepts, e.g. the in-process emulator
(:class:`sslsms_notify.emulator.EmulatorTransport`).
"""

from __future__ import annotations

import codecs
import encodings.idna  # noqa: F401  (see below)
import os
import socket
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import httpx
import tenacity

from .._log import get_logger, install_third_party_redaction, redact, register_secret
from ..version import __version__
from .errors import GatewayError, MalformedResponseError, TransportError
from .models import SINGLE_PATH, ApiResponse, DynamicMessage, ResponseFormatError, SendResult, parse_response
from .protocol import (
    Call,
    SendPlan,
    plan_bulk,
    plan_dynamic,
    plan_single,
    read_answer,
    stops_the_plan,
)
from .retry import RetryPolicy

DEFAULT_BASE_URL = "https://smsplus.sslwireless.com"
DEFAULT_TIMEOUT = 10.0
MAX_TOKEN_LENGTH = 50  # spec: api_token, length 50
MAX_SID_LENGTH = 20  # spec: sid, length 20

_log = get_logger("sslsms_notify.gateway")
# httpx writes headers and body apart; without TCP_NODELAY, Nagle plus the
# peer's delayed ACK stall every POST by ~40 ms.
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
# socket.getaddrinfo() encodes the host name with the "idna" codec, whose module is
# imported on first use: by our dispatch thread, during the first request. A child
# forked meanwhile would wait forever for that module's import lock, held by a thread
# it does not have. So the codec is imported and looked up now, before any thread of
# ours exists. (Everything else a request needs is imported with httpx and httpcore.)
codecs.lookup("idna")


def default_transport() -> httpx.HTTPTransport:
    return httpx.HTTPTransport(socket_options=_SOCKET_OPTIONS)


def default_async_transport() -> httpx.AsyncHTTPTransport:
    return httpx.AsyncHTTPTransport(socket_options=_SOCKET_OPTIONS)


def _check_credentials(api_token: object, sid: object) -> tuple[str, str]:
    if not isinstance(api_token, str) or not api_token.strip():
        raise ValueError("api_token must be a non-empty string")
    if len(api_token) > MAX_TOKEN_LENGTH or any(c.isspace() for c in api_token):
        # Say the rule, never the value: it is a secret.
        raise ValueError(f"api_token must be at most {MAX_TOKEN_LENGTH} characters without spaces")
    if not isinstance(sid, str) or not sid.strip():
        raise ValueError("sid must be a non-empty string")
    if len(sid) > MAX_SID_LENGTH or any(c.isspace() for c in sid):
        raise ValueError(f"sid {sid!r} must be at most {MAX_SID_LENGTH} characters without spaces")
    return api_token, sid


class _ClientBase:
    def __init__(
        self,
        api_token: str,
        sid: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._api_token, self.sid = _check_credentials(api_token, sid)
        register_secret(self._api_token)
        install_third_party_redaction()
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {base_url!r} must start with http:// or https://")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry = retry if retry is not None else RetryPolicy()

    @classmethod
    def from_env(cls, **kwargs: Any) -> Self:
        """Build from ``SSLSMS_API_TOKEN``, ``SSLSMS_SID`` and optional ``SSLSMS_BASE_URL``."""
        missing = [n for n in ("SSLSMS_API_TOKEN", "SSLSMS_SID") if not os.environ.get(n)]
        if missing:
            raise ValueError(f"environment variable {', '.join(missing)} is not set")
        if os.environ.get("SSLSMS_BASE_URL"):
            kwargs.setdefault("base_url", os.environ["SSLSMS_BASE_URL"])
        return cls(os.environ["SSLSMS_API_TOKEN"], os.environ["SSLSMS_SID"], **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sid={self.sid!r}, base_url={self.base_url!r}, api_token='***')"

    def _http_kwargs(self, call: Call) -> dict[str, Any]:
        body = {"api_token": self._api_token, "sid": self.sid, **call.payload}
        if call.method == "GET":
            return {"method": "GET", "url": call.path, "params": body}
        return {"method": "POST", "url": call.path, "json": body}

    def _answer(self, call: Call, response: httpx.Response, *, is_retry: bool) -> ApiResponse:
        unknown_before = call.unknown
        try:
            return read_answer(
                call, response.status_code, response.headers, response.content, is_retry=is_retry
            )
        except GatewayError as error:
            # a definite answer to this attempt says nothing of an earlier one that may have got through
            error.earlier_attempt_unknown = unknown_before
            if error.status_code is None:  # no API status (an HTML page...): this outcome is unknown too
                call.unknown = True
            raise

    @staticmethod
    def _transport_error(call: Call, exc: httpx.HTTPError) -> TransportError:
        # No connection, no request: the gateway has nothing, unless an earlier attempt got
        # through (then the outcome stays unknown, whatever this attempt did).
        if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.UnsupportedProtocol):
            call.maybe_reached = call.unknown = True
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
        message = redact(f"request {kind}: {type(exc).__name__}: {exc}")
        return TransportError(message, request_sent=call.maybe_reached)

    @staticmethod
    def _log_retry(retry_state: tenacity.RetryCallState) -> None:
        # DEBUG: a pipeline says once that the gateway fails (and once that it recovered);
        # this line comes per request, for as long as an outage lasts.
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        _log.debug(
            "gateway request failed, retrying it within this call",
            attempt=retry_state.attempt_number,
            delay=round(retry_state.upcoming_sleep, 3),
            status_code=getattr(exc, "status_code", None),
            http_status=getattr(exc, "http_status", None),
            error=str(exc),
        )

    def _finish_call(self, plan: SendPlan, call: Call, outcome: ApiResponse | GatewayError) -> bool:
        """Record one request's outcome; False when the rest of the plan must not be sent."""
        if isinstance(outcome, GatewayError):
            plan.record_error(call, outcome)
            return not stops_the_plan(outcome)
        plan.record(call, outcome)
        return True

    @staticmethod
    def _abandon(plan: SendPlan, calls: list[Call], error: GatewayError) -> None:
        for call in calls:
            plan.record_error(call, error)


class GatewayClient(_ClientBase):
    """Blocking client. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        api_token: str,
        sid: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(api_token, sid, base_url=base_url, timeout=timeout, retry=retry)
        self._transport = transport
        self._http = self._new_http()
        self._http_pid = os.getpid()

    def _new_http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            timeout=self.timeout,
            transport=self._transport if self._transport is not None else default_transport(),
            headers={"Accept": "application/json", "User-Agent": f"sslsms-notify/{__version__}"},
        )

    def _pool(self) -> httpx.Client:
        """This process's connection pool: a forked child makes its own on first use.

        The parent's pool is left alone, never closed (its lock may have been held by
        a thread of the parent at the fork; its sockets are the parent's connections).
        """
        if self._http_pid != os.getpid():
            self._http = self._new_http()
            self._http_pid = os.getpid()
        return self._http

    def after_fork_in_child(self) -> None:
        """In a forked child's at-fork hook: nothing is made here (an SSL context, a
        pool); the first request does it, on whatever thread sends it."""
        self._http_pid = -1

    def probe_credentials(self) -> int:
        """Ask the gateway about the credentials without sending anything; its API status code.

        The API has no request that only checks credentials, so this is the cheapest one
        that cannot send: a single SMS request that names no recipient, no text and no
        csms_id. 4001-4003 mean the token, SID or IP is refused. Any other answer (4022,
        "Required Parameter Missing", from a gateway that checks credentials first, as the
        emulator does) only says they were not refused: the spec gives no order of checks,
        so only a real SMS proves them. Raises :class:`TransportError` if no answer comes.
        """
        body = {"api_token": self._api_token, "sid": self.sid}
        try:
            response = self._pool().request("POST", SINGLE_PATH, json=body)
        except httpx.HTTPError as exc:
            raise TransportError(redact(f"request failed: {type(exc).__name__}: {exc}")) from None
        try:
            return parse_response(response.content).status_code
        except ResponseFormatError as exc:
            raise MalformedResponseError(
                f"HTTP {response.status_code} and no gateway answer ({exc}); check base_url",
                http_status=response.status_code,
            ) from None

    def send_single(
        self,
        msisdn: str,
        text: str,
        *,
        csms_id: str | None = None,
        method: str = "POST",
        is_retry: bool = False,
        retry: RetryPolicy | None = None,
    ) -> SendResult:
        """Send one SMS. ``is_retry=True`` if this csms_id may have been sent before.

        ``retry`` overrides the client's retry policy for this call.
        """
        return self._run(plan_single(msisdn, text, csms_id, method), is_retry, retry)

    def send_bulk(
        self,
        msisdns: Sequence[str],
        text: str,
        *,
        batch_csms_id: str | None = None,
        is_retry: bool = False,
        retry: RetryPolicy | None = None,
    ) -> SendResult:
        """One text to many numbers, 100 numbers a request; repeats are sent once."""
        return self._run(plan_bulk(msisdns, text, batch_csms_id), is_retry, retry)

    def send_dynamic(
        self,
        messages: Iterable[DynamicMessage | tuple[str, str]],
        *,
        is_retry: bool = False,
        retry: RetryPolicy | None = None,
    ) -> SendResult:
        """A text per number, 100 SMS a request; a number at most once per request
        (several texts for one number go in successive requests)."""
        return self._run(plan_dynamic(messages), is_retry, retry)

    def _run(self, plan: SendPlan, is_retry: bool, retry: RetryPolicy | None = None) -> SendResult:
        for position, call in enumerate(plan.calls):
            try:
                outcome: ApiResponse | GatewayError = self._send_call(plan, call, is_retry, retry)
            except GatewayError as exc:
                outcome = exc
            if not self._finish_call(plan, call, outcome):
                self._abandon(plan, plan.calls[position + 1 :], outcome)  # type: ignore[arg-type]
                break
        return plan.result()

    def _send_call(
        self, plan: SendPlan, call: Call, is_retry: bool, retry: RetryPolicy | None = None
    ) -> ApiResponse:
        policy = retry or self.retry
        retrying = tenacity.Retrying(**policy.tenacity_kwargs(), before_sleep=self._log_retry)
        for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                plan.requests += 1
                plan.retries += number > 1
                try:
                    response = self._pool().request(**self._http_kwargs(call))
                except httpx.HTTPError as exc:
                    raise self._transport_error(call, exc) from None
                call.maybe_reached = True
                return self._answer(call, response, is_retry=is_retry or number > 1)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def close(self) -> None:
        if self._http_pid == os.getpid():
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncGatewayClient(_ClientBase):
    """The same surface as :class:`GatewayClient`, awaited."""

    def __init__(
        self,
        api_token: str,
        sid: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(api_token, sid, base_url=base_url, timeout=timeout, retry=retry)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport if transport is not None else default_async_transport(),
            headers={"Accept": "application/json", "User-Agent": f"sslsms-notify/{__version__}"},
        )

    async def send_single(
        self,
        msisdn: str,
        text: str,
        *,
        csms_id: str | None = None,
        method: str = "POST",
        is_retry: bool = False,
        retry: RetryPolicy | None = None,
    ) -> SendResult:
        return await self._run(plan_single(msisdn, text, csms_id, method), is_retry, retry)

    async def send_bulk(
        self,
        msisdns: Sequence[str],
        text: str,
        *,
        batch_csms_id: str | None = None,
        is_retry: bool = False,
        retry: RetryPolicy | None = None,
    ) -> SendResult:
        return await self._run(plan_bulk(msisdns, text, batch_csms_id), is_retry, retry)

    async def send_dynamic(
        self,
        messages: Iterable[DynamicMessage | tuple[str, str]],
        *,
        is_retry: bool = False,
        retry: RetryPolicy | None = None,
    ) -> SendResult:
        return await self._run(plan_dynamic(messages), is_retry, retry)

    async def _run(self, plan: SendPlan, is_retry: bool, retry: RetryPolicy | None = None) -> SendResult:
        for position, call in enumerate(plan.calls):
            try:
                outcome: ApiResponse | GatewayError = await self._send_call(plan, call, is_retry, retry)
            except GatewayError as exc:
                outcome = exc
            if not self._finish_call(plan, call, outcome):
                self._abandon(plan, plan.calls[position + 1 :], outcome)  # type: ignore[arg-type]
                break
        return plan.result()

    async def _send_call(
        self, plan: SendPlan, call: Call, is_retry: bool, retry: RetryPolicy | None = None
    ) -> ApiResponse:
        policy = retry or self.retry
        retrying = tenacity.AsyncRetrying(**policy.tenacity_kwargs(), before_sleep=self._log_retry)
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                plan.requests += 1
                plan.retries += number > 1
                try:
                    response = await self._http.request(**self._http_kwargs(call))
                except httpx.HTTPError as exc:
                    raise self._transport_error(call, exc) from None
                call.maybe_reached = True
                return self._answer(call, response, is_retry=is_retry or number > 1)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
