"""One case per status code and rule of the spec, against both emulator frontends.

Each case speaks raw HTTP (what any client in any language would send) and, where
it makes sense, also runs our client, so both sides of the wire are held to the spec.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sslsms_notify import GatewayClient
from sslsms_notify.emulator import (
    DEMO_API_TOKEN as TOKEN,
)
from sslsms_notify.emulator import (
    DEMO_SID as SID,
)
from sslsms_notify.emulator import (
    EmulatorServer,
    EmulatorTransport,
    GatewayEmulator,
)

from .conftest import FAST_RETRY

SINGLE, BULK, DYNAMIC = "/api/v3/send-sms", "/api/v3/send-sms/bulk", "/api/v3/send-sms/dynamic"


class Gateway:
    """One emulator behind one frontend, with a raw HTTP client for it."""

    def __init__(self, emulator: GatewayEmulator, http: httpx.Client, base_url: str, kind: str):
        self.emulator, self.http, self.base_url, self.kind = emulator, http, base_url, kind

    def post(self, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        response = self.http.post(path, json=body, **kwargs)
        return response.json()

    def creds(self, **extra: Any) -> dict[str, Any]:
        return {"api_token": TOKEN, "sid": SID, **extra}

    def client(self) -> GatewayClient:
        transport = EmulatorTransport(self.emulator) if self.kind == "transport" else None
        return GatewayClient(TOKEN, SID, base_url=self.base_url, transport=transport, retry=FAST_RETRY)


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as s:
        yield s


@pytest.fixture(params=["transport", "server"])
def gw(request, server: EmulatorServer) -> Iterator[Gateway]:
    if request.param == "transport":
        emulator = GatewayEmulator()
        http = httpx.Client(base_url="http://emulator", transport=EmulatorTransport(emulator))
        yield Gateway(emulator, http, "http://emulator", "transport")
    else:
        server.emulator.reset()
        server.emulator.config = type(server.emulator.config)()
        http = httpx.Client(base_url=server.url)
        yield Gateway(server.emulator, http, server.url, "server")
    http.close()


def single(gw: Gateway, **fields: Any) -> dict[str, Any]:
    body = gw.creds(msisdn="01712345678", sms="hello", csms_id="id1")
    body.update(fields)
    return gw.post(SINGLE, {k: v for k, v in body.items() if v is not None})


def test_single_success_matches_the_spec_sample(gw: Gateway) -> None:
    answer = single(gw, msisdn="019" + "12345678", sms="Message Body", csms_id="4473433434pZ684333392"[:20])
    assert answer["status"] == "SUCCESS" and answer["status_code"] == 200
    assert answer["error_message"] == ""
    [info] = answer["smsinfo"]
    assert info["sms_status"] == "SUCCESS" and info["status_message"] == "Success"
    assert info["msisdn"] == "8801912345678"  # echoed normalized
    assert info["sms_type"] == "EN" and info["sms_body"] == "Message Body"
    assert info["csms_id"] == "4473433434pZ68433339" and info["reference_id"]


def test_single_by_get(gw: Gateway) -> None:
    params = gw.creds(msisdn="01712345678", sms="via get", csms_id="g1")
    answer = gw.http.get(SINGLE, params=params).json()
    assert answer["status_code"] == 200
    assert gw.emulator.messages()[0].text == "via get"


def test_bangla_is_bn(gw: Gateway) -> None:
    answer = single(gw, sms="ডাটাবেস ডাউন")
    assert answer["smsinfo"][0]["sms_type"] == "BN"


def test_reference_ids_are_unique(gw: Gateway) -> None:
    refs = {single(gw, csms_id=f"u{i}")["smsinfo"][0]["reference_id"] for i in range(20)}
    assert len(refs) == 20


def test_4001_unknown_token(gw: Gateway) -> None:
    assert single(gw, api_token="nope")["status_code"] == 4001


def test_4002_sid_not_permitted(gw: Gateway) -> None:
    assert single(gw, sid="OTHER")["status_code"] == 4002


def test_4003_ip_blacklisted(gw: Gateway) -> None:
    gw.emulator.config.blacklisted_ips.add("127.0.0.1")
    answer = single(gw)
    assert answer["status_code"] == 4003 and answer["status"] == "FAILED"


def test_4004_unknown_path(gw: Gateway) -> None:
    assert gw.post("/api/v3/send-mms", gw.creds())["status_code"] == 4004


def test_4005_bad_json_and_content_type(gw: Gateway) -> None:
    bad = gw.http.post(SINGLE, content=b"{not json", headers={"content-type": "application/json"})
    assert bad.json()["status_code"] == 4005
    form = gw.http.post(SINGLE, data=gw.creds(msisdn="01712345678", sms="x", csms_id="f1"))
    assert form.json()["status_code"] == 4005
    get_bulk = gw.http.get(BULK, params=gw.creds())
    assert get_bulk.json()["status_code"] == 4005
    not_array = gw.post(BULK, gw.creds(msisdn="01712345678", sms="x", batch_csms_id="b"))
    assert not_array["status_code"] == 4005


def test_4020_invalid_csms_id(gw: Gateway) -> None:
    assert single(gw, csms_id="has-dash")["status_code"] == 4020
    assert single(gw, csms_id="x" * 21)["status_code"] == 4020


@pytest.mark.parametrize("field", ["api_token", "sid", "msisdn", "sms", "csms_id"])
def test_4022_missing_field_is_named(gw: Gateway, field: str) -> None:
    answer = single(gw, **{field: None})
    assert answer["status_code"] == 4022
    assert field in answer["error_message"]


def test_4023_duplicate_csms_id_same_day(gw: Gateway) -> None:
    assert single(gw, csms_id="dup1")["status_code"] == 200
    assert single(gw, csms_id="dup1")["status_code"] == 4023
    assert len(gw.emulator.messages()) == 1


def test_csms_id_is_free_again_the_next_gateway_day(server) -> None:
    now = [1_800_000_000.0]
    emulator = GatewayEmulator(clock=lambda: now[0])
    http = httpx.Client(base_url="http://e", transport=EmulatorTransport(emulator))
    body = {"api_token": TOKEN, "sid": SID, "msisdn": "01712345678", "sms": "x", "csms_id": "day1"}
    assert http.post(SINGLE, json=body).json()["status_code"] == 200
    now[0] += 86_400
    assert http.post(SINGLE, json=body).json()["status_code"] == 200


def test_4023_in_dynamic_is_per_sms(gw: Gateway) -> None:
    single(gw, csms_id="used1")
    answer = gw.post(
        DYNAMIC,
        gw.creds(
            sms=[
                {"msisdn": "01712345678", "text": "a", "csms_id": "used1"},
                {"msisdn": "01812345678", "text": "b", "csms_id": "fresh1"},
                {"msisdn": "01912345678", "text": "c", "csms_id": "fresh1"},
            ]
        ),
    )
    assert answer["status_code"] == 200
    got = [(i["sms_status"], i["status_message"]) for i in answer["smsinfo"]]
    assert got == [
        ("DUPLICATE", "Duplicate CMS ID"),
        ("SUCCESS", "Success"),
        ("DUPLICATE", "Duplicate CMS ID"),
    ]


def test_4025_invalid_msisdn(gw: Gateway) -> None:
    assert single(gw, msisdn="01212345678")["status_code"] == 4025


def test_4026_blocked_msisdn(gw: Gateway) -> None:
    gw.emulator.config.blocked_msisdns.add("8801712345678")
    assert single(gw)["status_code"] == 4026


def test_4027_message_too_long(gw: Gateway) -> None:
    assert single(gw, sms="x" * 1001)["status_code"] == 4027
    assert single(gw, sms="x" * 1000, csms_id="ok1000")["status_code"] == 200


def test_4028_no_sms_succeeded_in_bulk(gw: Gateway) -> None:
    answer = gw.post(BULK, gw.creds(msisdn=["0121", "abc"], sms="x", batch_csms_id="b1"))
    assert answer["status_code"] == 4028 and answer["status"] == "FAILED"
    assert [i["sms_status"] for i in answer["smsinfo"]] == ["INVALID", "INVALID"]


def test_4028_no_sms_succeeded_in_dynamic(gw: Gateway) -> None:
    answer = gw.post(DYNAMIC, gw.creds(sms=[{"msisdn": "0121", "text": "a", "csms_id": "d1"}]))
    assert answer["status_code"] == 4028
    assert answer["smsinfo"][0]["status_message"] == "Invalid MSISDN"


def test_4029_daily_request_quota(gw: Gateway) -> None:
    gw.emulator.config.daily_quota = 2
    codes = [single(gw, csms_id=f"q{i}")["status_code"] for i in range(3)]
    assert codes == [200, 200, 4029]


def test_4030_more_than_100_numbers(gw: Gateway) -> None:
    numbers = [f"0171{n:07d}" for n in range(101)]
    assert gw.post(BULK, gw.creds(msisdn=numbers, sms="x", batch_csms_id="b"))["status_code"] == 4030
    items = [{"msisdn": n, "text": "x", "csms_id": f"c{i}"} for i, n in enumerate(numbers)]
    assert gw.post(DYNAMIC, gw.creds(sms=items))["status_code"] == 4030
    assert gw.emulator.messages() == []


def test_4031_tps_limit(gw: Gateway) -> None:
    gw.emulator.config.tps_limit = 3
    codes = [single(gw, csms_id=f"t{i}")["status_code"] for i in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [4031, 4031]


def test_duplicate_msisdn_in_bulk(gw: Gateway) -> None:
    answer = gw.post(
        BULK,
        gw.creds(msisdn=["01712345678", "8801712345678", "01812345678"], sms="x", batch_csms_id="bd1"),
    )
    assert [i["sms_status"] for i in answer["smsinfo"]] == ["SUCCESS", "DUPLICATE", "SUCCESS"]
    assert answer["smsinfo"][1]["status_message"] == "Duplicate MSISDN"
    assert all(i["csms_id"] == "bd1" for i in answer["smsinfo"])
    assert len(gw.emulator.messages()) == 2


def test_duplicate_msisdn_in_dynamic_is_not_sent(gw: Gateway) -> None:
    """Spec 3.2: status DUPLICATE, message "Duplicate MSISDN": "MSISDN is duplicate on the same
    request." Three distinct texts for one number in one /dynamic request: only the first is sent."""
    answer = gw.post(
        DYNAMIC,
        gw.creds(
            sms=[
                {"msisdn": "01712345678", "text": "first", "csms_id": "dm1"},
                {"msisdn": "8801712345678", "text": "second", "csms_id": "dm2"},
                {"msisdn": "01812345678", "text": "other phone", "csms_id": "dm3"},
                {"msisdn": "+8801712345678", "text": "third", "csms_id": "dm4"},
            ]
        ),
    )
    assert answer["status_code"] == 200
    statuses = [(i["sms_status"], i["status_message"], i["csms_id"]) for i in answer["smsinfo"]]
    assert statuses == [
        ("SUCCESS", "Success", "dm1"),
        ("DUPLICATE", "Duplicate MSISDN", "dm2"),
        ("SUCCESS", "Success", "dm3"),
        ("DUPLICATE", "Duplicate MSISDN", "dm4"),
    ]
    assert sorted(m.text for m in gw.emulator.messages()) == ["first", "other phone"]
    # the refused SMS's id was not used: it can be sent on its own later
    again = gw.post(DYNAMIC, gw.creds(sms=[{"msisdn": "01712345678", "text": "second", "csms_id": "dm2"}]))
    assert again["smsinfo"][0]["sms_status"] == "SUCCESS"


def test_our_client_never_puts_a_number_twice_in_one_request(gw: Gateway) -> None:
    """Four texts for one phone and one for another: four requests, each number once per request."""
    client = gw.client()
    messages = [("01712345678", f"text {i}") for i in range(4)] + [("01812345678", "other")]
    result = client.send_dynamic(messages)
    assert result.ok and result.requests == 4
    assert [m.sms_body for m in result.messages] == [f"text {i}" for i in range(4)] + ["other"]
    assert len(gw.emulator.messages()) == 5


def test_bulk_batch_id_reuse_is_4023(gw: Gateway) -> None:
    body = gw.creds(msisdn=["01712345678"], sms="x", batch_csms_id="bb1")
    assert gw.post(BULK, body)["status_code"] == 200
    assert gw.post(BULK, body)["status_code"] == 4023


def test_a_part_of_a_bulk_resent_under_its_id_is_4023_and_not_sent(gw: Gateway) -> None:
    """4.2.1: batch_csms_id is "a unique reference ID" for the whole bulk request; 3.1: 4023
    "CSMS ID is duplicate in the same day". The id names the request, not each number: a
    resend under it is refused whole, whichever numbers it carries, and sends nothing.

    This is the gateway behaviour that turned a client's partial resend into a lost page:
    ``bulk[a]`` accepted, then ``bulk[b]`` under the same id answered 4023, ``b`` never sent.
    """
    a, b = "01712345678", "01812345678"
    assert gw.post(BULK, gw.creds(msisdn=[a], sms="x", batch_csms_id="part1"))["status_code"] == 200
    answer = gw.post(BULK, gw.creds(msisdn=[b], sms="x", batch_csms_id="part1"))
    assert answer["status_code"] == 4023
    assert [m.msisdn for m in gw.emulator.messages()] == ["8801712345678"]
    history = gw.emulator.history()
    assert [(r.endpoint, r.msisdns, r.ids, r.outcome) for r in history] == [
        ("bulk", (a,), ("part1",), "200"),
        ("bulk", (b,), ("part1",), "4023"),
    ]


def test_a_timeout_after_processing_sent_the_sms(gw: Gateway) -> None:
    """A fault that loses the answer of a processed request: the SMS is in the inbox."""
    _fault(gw, {"kind": "timeout", "after_processing": True, "hold": 0.2})
    with pytest.raises(httpx.HTTPError):
        gw.http.post(SINGLE, json=gw.creds(msisdn="01712345678", sms="x", csms_id="late1"), timeout=0.1)
    assert len(gw.emulator.messages()) == 1
    assert gw.emulator.history()[-1].outcome == "200 then timeout"
    if gw.kind == "server":
        requests = gw.http.get("/__emulator/requests").json()["requests"]
        assert requests[-1]["outcome"] == "200 then timeout"


# -- faults --------------------------------------------------------------------
def _fault(gw: Gateway, spec: dict[str, Any]) -> None:
    if gw.kind == "server":
        assert gw.http.post("/__emulator/faults", json=spec).status_code == 200
    else:
        gw.emulator.faults.from_dict(spec)


def test_fault_api_code_for_next_n(gw: Gateway) -> None:
    _fault(gw, {"kind": "api_code", "code": 5000, "count": 2})
    codes = [single(gw, csms_id=f"f{i}")["status_code"] for i in range(3)]
    assert codes == [5000, 5000, 200]


def test_fault_http_error_with_html(gw: Gateway) -> None:
    _fault(gw, {"kind": "http_error", "http_status": 502})
    response = gw.http.post(SINGLE, json=gw.creds(msisdn="01712345678", sms="x", csms_id="h"))
    assert response.status_code == 502 and response.text.startswith("<html>")


def test_fault_dropped_connection(gw: Gateway) -> None:
    _fault(gw, {"kind": "drop", "after_processing": True})
    with pytest.raises(httpx.TransportError):
        gw.http.post(SINGLE, json=gw.creds(msisdn="01712345678", sms="x", csms_id="dr"))
    assert len(gw.emulator.messages()) == 1  # processed, answer lost


def test_fault_timeout(gw: Gateway) -> None:
    _fault(gw, {"kind": "timeout", "hold": 2.0})
    with pytest.raises(httpx.TimeoutException):
        gw.http.post(SINGLE, json=gw.creds(msisdn="01712345678", sms="x", csms_id="to"), timeout=0.3)


def test_fault_latency(gw: Gateway) -> None:
    import time

    _fault(gw, {"latency": 0.2})
    start = time.monotonic()
    single(gw)
    assert time.monotonic() - start >= 0.19
    gw.emulator.faults.clear()


def test_fault_outage_for_a_while(gw: Gateway) -> None:
    _fault(gw, {"kind": "http_error", "http_status": 503, "seconds": 0.3})
    assert gw.http.post(SINGLE, json=gw.creds()).status_code == 503
    import time

    time.sleep(0.35)
    assert single(gw)["status_code"] == 200


# -- our client against both ---------------------------------------------------
def test_our_client_against_both_frontends(gw: Gateway) -> None:
    with gw.client() as client:
        assert client.send_single("01712345678", "a").ok
        assert client.send_bulk([f"0181{n:07d}" for n in range(120)], "b").requests == 2
        assert client.send_dynamic([("01912345678", "c"), ("01612345678", "d")]).ok
        gw.emulator.faults.drop(after_processing=True)
        assert client.send_single("01512345678", "e").messages[0].already_delivered
    assert len(gw.emulator.messages()) == 1 + 120 + 2 + 1


# -- control API over HTTP -----------------------------------------------------
def test_inbox_over_http(server: EmulatorServer) -> None:
    server.emulator.reset()
    http = httpx.Client(base_url=server.url)
    http.post(
        SINGLE,
        json={
            "api_token": TOKEN,
            "sid": SID,
            "msisdn": "01712345678",
            "sms": "inbox",
            "csms_id": "in1",
        },
    )
    messages = http.get("/__emulator/messages").json()["messages"]
    assert messages[0]["text"] == "inbox" and messages[0]["msisdn"] == "8801712345678"
    assert messages[0]["csms_id"] == "in1" and messages[0]["reference_id"]
    assert http.get("/__emulator/messages", params={"msisdn": "01812345678"}).json()["messages"] == []
    assert http.get("/__emulator/stats").json()["by_status_code"] == {"200": 1}
    assert http.post("/__emulator/config", json={"tps_limit": 5}).json()["tps_limit"] == 5
    assert http.post("/__emulator/config", json={"bogus": 1}).status_code == 400
    assert http.post("/__emulator/faults", json={"kind": "nope"}).status_code == 400
    assert http.delete("/__emulator/messages").json() == {"ok": True}
    assert http.get("/__emulator/messages").json()["messages"] == []
    server.emulator.config.tps_limit = None


def test_server_restarts_on_the_same_port_keeping_state() -> None:
    with EmulatorServer() as s:
        client = s.client(retry=FAST_RETRY)
        client.send_single("01712345678", "before")
        port = s.port
        s.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/__emulator/health", timeout=0.5)
        s.start()
        assert s.port == port
        assert client.send_single("01712345678", "after").ok
        assert [m.text for m in s.emulator.messages()] == ["before", "after"]


def test_pytest_plugin_fixture(sslsms_gateway) -> None:
    client = sslsms_gateway.client()
    client.send_single("01712345678", "from the fixture")
    assert sslsms_gateway.emulator.messages()[0].text == "from the fixture"
    assert json.loads(httpx.get(sslsms_gateway.url + "/__emulator/health").text) == {"ok": True}
