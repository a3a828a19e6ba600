"""The dispatcher's reading of the gateway's answers, SMS by SMS.

Spec 3.1 and 3.2 are the referee: 4023 / "Duplicate CMS ID" is "CSMS ID is duplicate
in the same day"; "Duplicate MSISDN" is "MSISDN is duplicate on the same request";
smsinfo is "one object for each SMS" (4.x.4).
"""

from __future__ import annotations

import json
from collections import Counter

import httpx

from sslsms_notify import GatewayClient, Notifier, RetryPolicy
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator
from sslsms_notify.stores import MemoryStore, OutboxItem, OutboxState

A, B = "8801711111111", "8801811111111"
NO_RETRY = RetryPolicy.none()


def notifier_on(transport: httpx.BaseTransport, store: MemoryStore) -> Notifier:
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=transport, retry=NO_RETRY)
    return Notifier(
        client,
        recipients=[A],
        store=store,
        dispatch=DispatchPolicy(tps=1000, backoff=0.0),
        start=False,
        close_at_exit=None,
    )


def test_duplicate_cms_id_for_an_sms_we_never_sent_under_it_is_not_delivered() -> None:
    """An id spent elsewhere today says nothing about our SMS: a dead letter that says so."""
    emulator = GatewayEmulator()
    transport = EmulatorTransport(emulator)
    with GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=transport) as other:
        assert other.send_single(A, "someone else's SMS", csms_id="spent0000000000001").ok
    store = MemoryStore()
    now = store.now()
    store.outbox_add(
        [
            OutboxItem("spent0000000000001", A, "ours, first text", now, now),
            OutboxItem("fresh0000000000001", B, "ours, second text", now, now),
        ]
    )
    notifier = notifier_on(transport, store)
    try:
        notifier.tick()
        outcomes = notifier.outcomes(["spent0000000000001", "fresh0000000000001"])
        assert outcomes == {"spent0000000000001": "failed", "fresh0000000000001": "delivered"}
        dead = store.outbox_get(["spent0000000000001"])["spent0000000000001"]
        assert dead.state is OutboxState.DEAD and "already used today" in dead.last_error
        assert [m.text for m in emulator.messages(A)] == ["someone else's SMS"]
    finally:
        notifier.close(2)


def test_duplicate_cms_id_for_a_request_that_went_out_before_means_delivered() -> None:
    """The same dynamic request again, after an answer was lost: 4023 per SMS is "delivered"."""
    emulator = GatewayEmulator()
    transport = EmulatorTransport(emulator)
    store = MemoryStore()
    now = store.now()
    sent = [
        OutboxItem("went0000000000001", A, "first", now, now, maybe_sent=True),
        OutboxItem("went0000000000002", B, "second", now, now, maybe_sent=True),
    ]
    store.outbox_add([i.bind("req1", "dynamic", 2) for i in sent])
    with GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=transport) as earlier:
        assert earlier.send_dynamic([(i.msisdn, i.text, i.csms_id) for i in sent]).ok  # the lost answer
    notifier = notifier_on(transport, store)
    try:
        notifier.tick()
        assert set(notifier.outcomes([i.csms_id for i in sent]).values()) == {"delivered"}
        assert len(emulator.messages()) == 2  # no second copy
        assert [r.outcome for r in emulator.history()] == ["200", "4028"]  # all duplicates: 4028
    finally:
        notifier.close(2)


def test_an_sms_missing_from_an_answer_is_not_delivered_and_goes_again() -> None:
    """smsinfo is one object for each SMS: a bulk answer that names only one of two numbers."""
    requests: list[dict] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        requests.append(body)
        numbers = body["msisdn"] if isinstance(body.get("msisdn"), list) else [body["msisdn"]]
        info = [
            {
                "sms_status": "SUCCESS",
                "status_message": "Success",
                "msisdn": numbers[0],
                "sms_type": "EN",
                "sms_body": body["sms"],
                "csms_id": body.get("batch_csms_id") or body.get("csms_id"),
                "reference_id": f"r{len(requests)}",
            }
        ]
        return httpx.Response(
            200, json={"status": "SUCCESS", "status_code": 200, "error_message": "", "smsinfo": info}
        )

    store = MemoryStore()
    now = store.now()
    store.outbox_add([OutboxItem("m000000000000001", A, "same", now, now)])
    store.outbox_add([OutboxItem("m000000000000002", B, "same", now, now)])
    notifier = notifier_on(httpx.MockTransport(gateway), store)
    try:
        notifier.tick()  # one bulk; B has no status in the answer
        assert notifier.outcomes(["m000000000000001", "m000000000000002"]) == {
            "m000000000000001": "delivered",
            "m000000000000002": "pending",
        }
        notifier.tick()  # B again, alone, under its own csms_id (the bulk's id is spent)
        assert notifier.outcomes(["m000000000000002"]) == {"m000000000000002": "delivered"}
        assert [sorted(r["msisdn"]) if isinstance(r["msisdn"], list) else r["msisdn"] for r in requests] == [
            sorted([A, B]),
            B,
        ]
        assert requests[1]["csms_id"] == "m000000000000002"
    finally:
        notifier.close(2)


def test_a_gateway_outage_is_logged_once_then_its_recovery(caplog) -> None:
    emulator = GatewayEmulator()
    emulator.faults.http_error(502, count=5)
    store = MemoryStore()
    now = store.now()
    store.outbox_add([OutboxItem(f"o{i:015d}", A, f"text {i}", now, now) for i in range(3)])
    notifier = notifier_on(EmulatorTransport(emulator), store)
    try:
        with caplog.at_level("WARNING", logger="sslsms_notify"):
            for _ in range(20):
                notifier.tick()
                store.outbox_resume()  # no waiting out backoff in a test
                if not store.outbox_open():
                    break
        assert store.outbox_open() == 0
        lines = Counter(r.getMessage() for r in caplog.records if "gateway" in r.getMessage())
        failing = [r for r in caplog.records if "gateway failing" in r.getMessage()]
        recovered = [r for r in caplog.records if "gateway recovered" in r.getMessage()]
        assert (len(failing), len(recovered)) == (1, 1), lines
        assert "failed_requests=5" in recovered[0].getMessage()
    finally:
        notifier.close(2)


def test_a_refused_connection_sent_nothing_but_a_timeout_may_have() -> None:
    """No connection, no request: only an attempt that got a connection makes the outcome unknown."""
    from .conftest import free_port

    store = MemoryStore()
    now = store.now()
    store.outbox_add([OutboxItem("r000000000000001", A, "text", now, now)])
    client = GatewayClient(
        DEMO_API_TOKEN, DEMO_SID, base_url=f"http://127.0.0.1:{free_port()}", retry=NO_RETRY, timeout=1
    )
    notifier = Notifier(client, recipients=[A], store=store, start=False, close_at_exit=None)
    try:
        notifier.tick()
        [item] = store.outbox_list()
        assert item.state is OutboxState.PENDING and not item.maybe_sent and item.attempts == 1
    finally:
        notifier.close(1)
    emulator = GatewayEmulator()
    emulator.faults.timeout(hold=5)
    store = MemoryStore()
    store.outbox_add([OutboxItem("t000000000000001", A, "text", now, now)])
    notifier = notifier_on(EmulatorTransport(emulator), store)
    try:
        notifier.tick()
        [item] = store.outbox_list()
        assert item.maybe_sent  # the gateway may have it: it goes again only under its own id
    finally:
        notifier.close(1)
