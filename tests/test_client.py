from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from sslsms_notify import AsyncGatewayClient, GatewayClient, RetryPolicy, SmsStatus
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator
from sslsms_notify.gateway import errors
from sslsms_notify.gateway.msisdn import InvalidMsisdnError

from .conftest import FAST_RETRY


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"0171{n:07d}" for n in range(start, start + count)]


class CountingTransport(httpx.BaseTransport):
    """Wraps the emulator transport to record what went over the wire."""

    def __init__(self, emulator: GatewayEmulator) -> None:
        self.inner = EmulatorTransport(emulator)
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.inner.handle_request(request)

    def payloads(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


@pytest.fixture
def wire(emulator: GatewayEmulator) -> CountingTransport:
    return CountingTransport(emulator)


@pytest.fixture
def counted(wire: CountingTransport):
    with GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=wire, retry=FAST_RETRY) as c:
        yield c


def test_single_post(counted: GatewayClient, wire: CountingTransport, emulator) -> None:
    result = counted.send_single("017-1234-5678", "Disk full", csms_id="abc123")
    assert result.ok and result.status_code == 200 and result.requests == 1
    [sms] = result.messages
    assert (sms.msisdn, sms.sms_status, sms.csms_id, sms.sms_type) == (
        "8801712345678",
        SmsStatus.SUCCESS,
        "abc123",
        "EN",
    )
    assert sms.reference_id
    [payload] = wire.payloads()
    assert payload == {
        "api_token": DEMO_API_TOKEN,
        "sid": DEMO_SID,
        "msisdn": "8801712345678",
        "sms": "Disk full",
        "csms_id": "abc123",
    }
    assert wire.requests[0].url.path == "/api/v3/send-sms"
    assert emulator.messages()[0].text == "Disk full"


def test_single_get(counted: GatewayClient, wire: CountingTransport) -> None:
    result = counted.send_single("01712345678", "via GET", method="GET")
    assert result.ok
    assert wire.requests[0].method == "GET"
    assert wire.requests[0].url.params["sms"] == "via GET"


def test_bulk_chunks_250_numbers_into_3_requests(counted, wire, emulator) -> None:
    result = counted.send_bulk(numbers(250), "deploy done")
    assert result.ok and result.requests == 3
    assert [len(p["msisdn"]) for p in wire.payloads()] == [100, 100, 50]
    assert len({p["batch_csms_id"] for p in wire.payloads()}) == 3
    assert [m.msisdn for m in result.messages] == ["880" + n[1:] for n in numbers(250)]
    assert len(emulator.messages()) == 250


def test_bulk_removes_and_reports_repeated_numbers(counted, wire) -> None:
    result = counted.send_bulk(["01712345678", "+8801712345678", "01812345678"], "hi")
    assert wire.payloads()[0]["msisdn"] == ["8801712345678", "8801812345678"]
    statuses = [(m.sms_status, m.status_message) for m in result.messages]
    assert statuses[1] == (SmsStatus.DUPLICATE, "Duplicate MSISDN")
    assert result.ok  # the repeated number got its SMS once


def test_dynamic_chunks_and_keeps_input_order(counted, wire, emulator) -> None:
    messages = [(n, f"text {i}") for i, n in enumerate(numbers(150))]
    result = counted.send_dynamic(messages)
    assert result.ok and result.requests == 2
    assert [len(p["sms"]) for p in wire.payloads()] == [100, 50]
    assert [m.sms_body for m in result.messages] == [f"text {i}" for i in range(150)]
    assert sorted(m.text for m in emulator.messages()) == sorted(f"text {i}" for i in range(150))


def test_bangla_is_reported_bn(client) -> None:
    result = client.send_single("01712345678", "সার্ভার ডাউন")
    assert result.messages[0].sms_type == "BN"


def test_bad_input_is_rejected_before_any_request(counted, wire) -> None:
    with pytest.raises(InvalidMsisdnError, match=r"msisdns\[1\] '0123'"):
        counted.send_bulk(["01712345678", "0123"], "x")
    with pytest.raises(ValueError, match="text has 1001 characters"):
        counted.send_single("01712345678", "x" * 1001)
    with pytest.raises(ValueError, match="csms_id 'has space'"):
        counted.send_single("01712345678", "x", csms_id="has space")
    with pytest.raises(ValueError, match="must be a list"):
        counted.send_bulk("01712345678", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"messages\[0\].msisdn"):
        counted.send_dynamic([("12", "x")])
    assert wire.requests == []


# -- status codes -> exceptions ------------------------------------------------
CODE_TO_ERROR = {
    4001: errors.AuthError,
    4002: errors.AuthError,
    4003: errors.AuthError,
    4004: errors.BadRequestError,
    4005: errors.BadRequestError,
    4020: errors.BadRequestError,
    4022: errors.BadRequestError,
    4023: errors.DuplicateCsmsIdError,
    4025: errors.BadRequestError,
    4026: errors.BadRequestError,
    4027: errors.BadRequestError,
    4028: errors.BadRequestError,
    4029: errors.TooManyRequestsError,
    4030: errors.RecipientLimitError,
    4031: errors.TpsExceededError,
    5000: errors.ServerError,
}
RETRYABLE = {4029, 4031, 5000}


@pytest.mark.parametrize(("code", "error"), sorted(CODE_TO_ERROR.items()))
def test_every_api_code_maps_to_its_error(code: int, error: type, emulator, counted, wire) -> None:
    emulator.faults.api_code(code, count=10)
    with pytest.raises(error) as info:
        counted.send_single("01712345678", "x")
    assert info.value.status_code == code
    assert isinstance(info.value, errors.GatewayError)
    expected_requests = FAST_RETRY.max_attempts if code in RETRYABLE else 1
    assert len(wire.requests) == expected_requests
    rate_limit = isinstance(info.value, errors.RateLimitError)
    assert rate_limit == (code in (4029, 4030, 4031))


def test_retry_reuses_the_same_csms_id(emulator, counted, wire) -> None:
    emulator.faults.api_code(5000, count=2)
    result = counted.send_single("01712345678", "x")
    assert result.ok and result.retries == 2 and result.requests == 3
    ids = {p["csms_id"] for p in wire.payloads()}
    assert len(ids) == 1


def test_bulk_retry_reuses_the_batch_id(emulator, counted, wire) -> None:
    emulator.faults.api_code(4031, count=1)
    assert counted.send_bulk(numbers(3), "x").ok
    assert len({p["batch_csms_id"] for p in wire.payloads()}) == 1
    assert len(wire.requests) == 2


@pytest.mark.parametrize("kind", ["single", "bulk", "dynamic"])
def test_lost_answer_then_duplicate_id_counts_as_delivered(kind, emulator, counted, wire) -> None:
    emulator.faults.drop(after_processing=True)
    if kind == "single":
        result = counted.send_single("01712345678", "x")
    elif kind == "bulk":
        result = counted.send_bulk(numbers(3), "x")
    else:
        result = counted.send_dynamic([(n, "x") for n in numbers(3)])
    assert result.ok and result.retries == 1
    assert all(m.already_delivered for m in result.messages)
    assert len(emulator.messages()) == len(result.messages)  # exactly once


def test_duplicate_id_on_first_attempt_is_an_error(counted) -> None:
    counted.send_single("01712345678", "x", csms_id="same1")
    with pytest.raises(errors.DuplicateCsmsIdError):
        counted.send_single("01712345678", "x", csms_id="same1")


def test_caller_declared_retry_treats_duplicate_as_delivered(counted, emulator) -> None:
    counted.send_single("01712345678", "x", csms_id="same2")
    result = counted.send_single("01712345678", "x", csms_id="same2", is_retry=True)
    assert result.ok and result.messages[0].already_delivered
    assert len(emulator.messages()) == 1


def test_no_retry_on_client_errors(emulator, counted, wire) -> None:
    emulator.config.blocked_msisdns.add("8801712345678")
    with pytest.raises(errors.BadRequestError) as info:
        counted.send_single("01712345678", "x")
    assert info.value.status_code == 4026 and len(wire.requests) == 1


def test_retries_are_bounded_by_attempts(emulator, counted, wire) -> None:
    emulator.faults.http_error(503, count=100)
    with pytest.raises(errors.ServerError) as info:
        counted.send_single("01712345678", "x")
    assert info.value.http_status == 503 and len(wire.requests) == FAST_RETRY.max_attempts


def test_retries_are_bounded_by_total_time(emulator, wire) -> None:
    emulator.faults.latency = 0.05
    emulator.faults.http_error(503, count=100)
    policy = RetryPolicy(max_attempts=100, initial_delay=0.01, max_delay=0.01, total_timeout=0.3)
    with GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=wire, retry=policy) as c:
        with pytest.raises(errors.ServerError):
            c.send_single("01712345678", "x")
    assert 2 <= len(wire.requests) <= 8


def test_retry_after_header_is_honoured() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        import time

        calls.append(time.monotonic())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "0.3"}, text="slow down")
        return httpx.Response(200, json={"status": "SUCCESS", "status_code": 200, "smsinfo": []})

    policy = RetryPolicy(max_attempts=3, initial_delay=0.0, max_delay=1.0)
    with GatewayClient("tok-1234", "SID", transport=httpx.MockTransport(handler), retry=policy) as c:
        assert c.send_single("01712345678", "x").ok
    assert calls[1] - calls[0] >= 0.28


def test_transport_errors_are_retried_then_raised(emulator, counted, wire) -> None:
    emulator.faults.timeout(count=10)
    with pytest.raises(errors.TransportError, match="timed out"):
        counted.send_single("01712345678", "x")
    assert len(wire.requests) == FAST_RETRY.max_attempts


def test_connection_refused_is_a_transport_error() -> None:
    policy = RetryPolicy(max_attempts=2, initial_delay=0.0, max_delay=0.0)
    with GatewayClient("tok-1234", "SID", base_url="http://127.0.0.1:9", retry=policy) as c:
        with pytest.raises(errors.TransportError):
            c.send_single("01712345678", "x")


def test_bulk_where_no_sms_succeeds_raises_4028_with_details(emulator, counted) -> None:
    emulator.config.blocked_msisdns.update({"8801712345678", "8801812345678"})
    with pytest.raises(errors.BadRequestError) as info:
        counted.send_bulk(["01712345678", "01812345678"], "x")
    assert info.value.status_code == 4028
    assert info.value.result is not None
    assert [m.status_message for m in info.value.result.messages] == ["Blocked MSISDN"] * 2


def test_partial_chunk_failure_returns_every_recipient(emulator, counted) -> None:
    # second chunk entirely blocked: chunk 1 delivered, chunk 2 rejected, nothing raised
    emulator.config.blocked_msisdns.update("880" + n[1:] for n in numbers(50, start=100))
    result = counted.send_bulk(numbers(150), "x")
    assert not result.ok and result.status_code == 4028
    assert len(result.messages) == 150
    assert len(result.delivered) == 100 and len(result.failed) == 50


def test_auth_error_stops_remaining_chunks(wire) -> None:
    with GatewayClient("wrong-token", DEMO_SID, transport=wire, retry=FAST_RETRY) as c:
        with pytest.raises(errors.AuthError) as info:
            c.send_bulk(numbers(250), "x")
    assert info.value.status_code == 4001 and len(wire.requests) == 1
    assert len(info.value.result.messages) == 250


# -- what real gateways send ---------------------------------------------------
def _client_answering(status: int, body: bytes, headers=None, attempts: int = 1) -> GatewayClient:
    transport = httpx.MockTransport(lambda r: httpx.Response(status, content=body, headers=headers))
    return GatewayClient(
        "tok-1234",
        "SID",
        transport=transport,
        retry=RetryPolicy(max_attempts=attempts, initial_delay=0, max_delay=0),
    )


def test_string_status_code_is_read() -> None:
    body = json.dumps(
        {
            "status": "SUCCESS",
            "status_code": "200",
            "error_message": "",
            "smsinfo": [
                {
                    "sms_status": "SUCCESS",
                    "msisdn": "8801712345678",
                    "csms_id": "x1",
                    "reference_id": "r",
                }
            ],
        }
    ).encode()
    assert _client_answering(200, body).send_single("01712345678", "x").ok


def test_missing_smsinfo_on_success_is_tolerated() -> None:
    body = b'{"status":"SUCCESS","status_code":200,"error_message":""}'
    result = _client_answering(200, body).send_bulk(numbers(2), "x")
    assert result.ok and len(result.messages) == 2


def test_string_error_code_is_mapped() -> None:
    body = b'{"status":"FAILED","status_code":"4001","error_message":"Unauthorized"}'
    with pytest.raises(errors.AuthError):
        _client_answering(200, body).send_single("01712345678", "x")


@pytest.mark.parametrize(
    ("status", "body", "error", "says"),
    [
        (200, b"", errors.MalformedResponseError, "unreadable gateway answer (empty body)"),
        (200, b"<html>oops</html>", errors.MalformedResponseError, "not JSON (starts with '<html>oops"),
        (200, b"[1, 2]", errors.MalformedResponseError, "JSON list, expected an object"),
        (200, b'{"status": "weird"}', errors.MalformedResponseError, "no status_code in the answer"),
        (502, b"<html>Bad gateway</html>", errors.ServerError, "HTTP 502 from gateway"),
        (404, b"<html>Not found</html>", errors.BadRequestError, "HTTP 404 and no gateway answer"),
        (429, b"", errors.TooManyRequestsError, "HTTP 429 from gateway (empty body)"),
    ],
)
def test_unreadable_answers_give_clear_errors(status, body, error, says) -> None:
    with pytest.raises(error) as info:
        _client_answering(status, body).send_single("01712345678", "x")
    # The error says what came back, keeps the HTTP status, and no SMS counts as sent.
    assert says in str(info.value)
    assert info.value.http_status == status
    assert info.value.result is not None
    assert [m.delivered for m in info.value.result.messages] == [False]
    if status == 404:
        assert "check base_url" in str(info.value)


# -- secrets -----------------------------------------------------------------
SECRET = "SECRET-token-4f2a9c"


def test_token_never_in_repr_errors_or_logs(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    emulator = GatewayEmulator()
    emulator.config.accounts[SECRET] = {DEMO_SID}
    emulator.faults.api_code(5000, count=2)
    client = GatewayClient(SECRET, DEMO_SID, transport=EmulatorTransport(emulator), retry=FAST_RETRY)
    client.send_single("01712345678", "x", method="GET")  # GET puts the token in the URL
    client.send_single("01712345678", "x")
    assert SECRET not in repr(client)
    emulator.faults.api_code(4001, count=1)
    with pytest.raises(errors.AuthError) as info:
        client.send_single("01712345678", "x", method="GET")
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert caplog.records, "expected httpx and retry log lines"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
    with pytest.raises(ValueError) as bad:
        GatewayClient(SECRET + " with space", DEMO_SID)
    assert SECRET not in str(bad.value)


def test_from_env(monkeypatch) -> None:
    monkeypatch.setenv("SSLSMS_API_TOKEN", "tok-1234")
    monkeypatch.setenv("SSLSMS_SID", "BRAND")
    monkeypatch.setenv("SSLSMS_BASE_URL", "http://127.0.0.1:8025")
    client = GatewayClient.from_env()
    assert client.sid == "BRAND" and client.base_url == "http://127.0.0.1:8025"
    monkeypatch.delenv("SSLSMS_SID")
    with pytest.raises(ValueError, match="SSLSMS_SID is not set"):
        GatewayClient.from_env()


# -- async ---------------------------------------------------------------------
def test_async_client_has_the_same_surface(emulator) -> None:
    async def main() -> None:
        transport = EmulatorTransport(emulator)
        async with AsyncGatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=transport, retry=FAST_RETRY) as c:
            assert (await c.send_single("01712345678", "a")).ok
            assert (await c.send_bulk(numbers(150), "b")).requests == 2
            assert (await c.send_dynamic([("01712345678", "c")])).ok
            emulator.faults.drop(after_processing=True)
            result = await c.send_single("01812345678", "d")
            assert result.messages[0].already_delivered
            emulator.faults.api_code(4002)
            with pytest.raises(errors.AuthError):
                await c.send_single("01712345678", "e")

    asyncio.run(main())
    assert len(emulator.messages()) == 1 + 150 + 1 + 1
