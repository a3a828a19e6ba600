"""Nothing lost at the edges: one phone, a kill at the worst moment, a hanging gateway, a restart.

Every case counts exactly what reached the gateway (the emulator, which answers a
number repeated in one request as the spec says: "Duplicate MSISDN", not sent).
Processes are real and killed with SIGKILL; stores are real SQLite files.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import pytest

from sslsms_notify import GatewayClient, Notifier, RetryPolicy, SMSHandler
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import EmulatorServer

pytestmark = pytest.mark.slow
QUICK = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05, total_timeout=2)
PHONE = "01711111111"


def client_for(server: EmulatorServer, **kw) -> GatewayClient:
    kw.setdefault("retry", QUICK)
    kw.setdefault("timeout", 2)
    return GatewayClient(server.api_token, server.sid, base_url=server.url, **kw)


def pairs(server: EmulatorServer) -> Counter:
    return Counter((m.msisdn, m.text.split(": ", 1)[-1]) for m in server.emulator.messages())


def run_child(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- one phone ----------------------------------------------------------------------
def test_twenty_distinct_alerts_to_one_phone_all_arrive(sslsms_gateway) -> None:
    n = Notifier(
        client_for(sslsms_gateway),
        recipients=[PHONE],
        dedup_window=0,
        per_recipient_limit=None,
        dispatch=DispatchPolicy(tps=1000),
        close_at_exit=None,
    )
    for i in range(20):
        n.alert(f"distinct problem {i}")
    assert n.flush(20), n.stats()
    got = pairs(sslsms_gateway)
    assert len(got) == 20 and max(got.values()) == 1
    assert n.stats()["sent"] == 20
    # one number per request: no request carried the phone twice
    assert 200 in sslsms_gateway.emulator.requests and n.stats()["requests"] == 20
    n.close(5)


def test_two_hundred_alerts_to_one_phone_through_an_outage(sslsms_gateway) -> None:
    n = Notifier(
        client_for(sslsms_gateway, retry=RetryPolicy.none()),
        recipients=[PHONE, "01811111111"],
        dedup_window=0,
        per_recipient_limit=None,
        dispatch=DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.2),
        close_at_exit=None,
    )
    sslsms_gateway.emulator.faults.http_error(503, count=15)  # the next 15 requests fail
    for i in range(200):
        n.alert(f"event {i}")
    assert n.flush(60), n.stats()
    got = pairs(sslsms_gateway)
    assert len(got) == 400 and max(got.values()) == 1
    assert n.stats()["sent"] == 400
    n.close(5)


# -- intake never waits for the network ---------------------------------------------------
SLOW_GATEWAY_CHILD = """
    import sys
    from sslsms_notify import GatewayClient, Notifier, RetryPolicy
    from sslsms_notify.alerting import DispatchPolicy
    url, token, sid, store = sys.argv[1:]
    client = GatewayClient(token, sid, base_url=url, timeout=30, retry=RetryPolicy(max_attempts=1))
    n = Notifier(client, recipients=["01711111111"], store=store, per_recipient_limit=None,
                 dispatch=DispatchPolicy(tps=1000, lease=2), close_at_exit=None)
    n.alert("first, sent while the gateway is slow", key="first")
    print("first", flush=True)
    sys.stdin.readline()  # the parent saw it reach the gateway: the dispatcher waits 4 s for the answer
    for i in range(299):
        n.alert(f"queued behind it {i}", key=f"k{i}")
    # Intake never waits for the network: the 299 are in the store long before that answer.
    print("accepted" if n.sync(3) else "not stored within 3 s", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_sigkill_right_after_alerts_loses_none_while_a_request_hangs(
    kind, sslsms_gateway, tmp_path, request
) -> None:
    store = f"sqlite:///{tmp_path}/slow.db" if kind == "sqlite" else request.getfixturevalue("redis_url")
    sslsms_gateway.emulator.faults.latency = 4.0  # accepts, then answers after 4 s
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(SLOW_GATEWAY_CHILD),
            sslsms_gateway.url,
            sslsms_gateway.api_token,
            sslsms_gateway.sid,
            store,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "first"
        assert wait_for(lambda: len(sslsms_gateway.emulator.messages()) == 1, timeout=20)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "accepted"
    finally:
        child.send_signal(signal.SIGKILL)  # while its request for "first" still hangs
        child.wait(10)
    assert len(sslsms_gateway.emulator.messages()) == 1  # only the first reached the gateway
    sslsms_gateway.emulator.faults.latency = 0.0
    n = Notifier(
        client_for(sslsms_gateway),
        recipients=[PHONE],
        store=store,
        per_recipient_limit=None,
        dispatch=DispatchPolicy(tps=1000, lease=2),
        close_at_exit=None,
    )
    try:
        assert n.flush(60), n.stats()
        got = pairs(sslsms_gateway)
        assert len(got) == 300 and max(got.values()) == 1, n.stats()
    finally:
        n.close(5)


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# -- bounded shutdown ---------------------------------------------------------------------
HANDLER_EXIT_CHILD = """
    import logging, sys, time
    from sslsms_notify import SMSHandler
    logging.getLogger().addHandler(SMSHandler(sys.argv[1], close_timeout=3))
    logging.getLogger("app").error("the gateway will hang on this one")
    time.sleep(0.3)
    print(time.time(), flush=True)
    sys.exit(0)
"""


def test_interpreter_exit_is_bounded_by_close_timeout_when_the_gateway_hangs(
    sslsms_gateway, tmp_path
) -> None:
    sslsms_gateway.emulator.faults.outage(60, mode="timeout", hold=30)
    url = (
        f"sslsms://{sslsms_gateway.sid}:{sslsms_gateway.api_token}@{PHONE}"
        f"?base_url={sslsms_gateway.url}&store=sqlite:///{tmp_path}/exit.db"
    )
    child = run_child(HANDLER_EXIT_CHILD, url)
    out, err = child.communicate(timeout=60)
    ended = time.time()
    assert child.returncode == 0, err
    exit_started = float(out.strip().splitlines()[-1])
    assert ended - exit_started <= 3 + 1, f"exit took {ended - exit_started:.1f} s"
    # Not delivered, not lost: it waits in the durable outbox for the next process.
    sslsms_gateway.emulator.faults.clear()
    n = Notifier(
        client_for(sslsms_gateway),
        recipients=[PHONE],
        store=f"sqlite:///{tmp_path}/exit.db",
        dispatch=DispatchPolicy(tps=1000, lease=2),
        close_at_exit=None,
    )
    assert n.flush(30), n.stats()
    assert [t for _, t in pairs(sslsms_gateway)] == ["the gateway will hang on this one"]
    n.close(5)


@pytest.mark.parametrize("gateway", ["hangs", "refuses", "answers slowly"])
def test_close_returns_within_its_timeout_whatever_the_gateway_does(sslsms_gateway, gateway) -> None:
    if gateway == "hangs":
        sslsms_gateway.emulator.faults.outage(60, mode="timeout", hold=30)
    elif gateway == "refuses":
        sslsms_gateway.stop()
    else:
        sslsms_gateway.emulator.faults.latency = 5.0
    n = Notifier(
        client_for(sslsms_gateway, timeout=30, retry=RetryPolicy(max_attempts=5, total_timeout=60)),
        recipients=[PHONE],
        dedup_window=0,
        close_at_exit=None,
    )
    for i in range(5):
        n.alert(f"during trouble {i}")
    if gateway != "refuses":  # a request is under way, and stuck
        assert wait_for(lambda: sslsms_gateway.emulator.history(), timeout=30)
    started = time.monotonic()
    delivered = n.close(2)
    took = time.monotonic() - started
    assert not delivered and took <= 2 + 1, f"close(2) took {took:.1f} s"
    assert n.stats()["lost"] >= 1  # a memory store says what it lost
    sslsms_gateway.emulator.faults.clear()
    sslsms_gateway.start()


def test_a_handler_close_timeout_bounds_close_even_in_process(sslsms_gateway) -> None:
    sslsms_gateway.emulator.faults.outage(60, mode="timeout", hold=30)
    handler = SMSHandler(
        api_token=sslsms_gateway.api_token,
        sid=sslsms_gateway.sid,
        recipients=[PHONE],
        base_url=sslsms_gateway.url,
        close_timeout=1,
    )
    logger = threading.current_thread().name  # any logger name; the handler is called directly
    import logging

    record = logging.LogRecord(logger, logging.ERROR, __file__, 1, "hang", None, None)
    handler.handle(record)
    started = time.monotonic()
    handler.close()
    assert time.monotonic() - started <= 1 + 1
    sslsms_gateway.emulator.faults.clear()


# -- resume -------------------------------------------------------------------------------
KILLED_IN_FLIGHT_CHILD = """
    import sys, time
    from sslsms_notify import GatewayClient, Notifier, RetryPolicy
    url, token, sid, store = sys.argv[1:]
    client = GatewayClient(token, sid, base_url=url, timeout=30, retry=RetryPolicy(max_attempts=1))
    n = Notifier(client, recipients=["01711111111", "01811111111"], store=store,
                 per_recipient_limit=None, close_at_exit=None)
    for i in range(5):
        n.alert(f"in flight when killed {i}", key=f"f{i}")
    n.sync()
    print("accepted", flush=True)
    time.sleep(60)
"""


def test_restart_resumes_without_an_alert_and_takes_over_a_dead_claim_in_seconds(
    sslsms_gateway, tmp_path
) -> None:
    """Default settings: the dead process's claim runs out in seconds (not 60), and the
    new process sends without raising an alert of its own or calling flush()."""
    store = f"sqlite:///{tmp_path}/resume.db"
    sslsms_gateway.emulator.faults.outage(60, mode="timeout", hold=30)  # the child's requests hang
    child = run_child(
        KILLED_IN_FLIGHT_CHILD, sslsms_gateway.url, sslsms_gateway.api_token, sslsms_gateway.sid, store
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "accepted"
        # its dispatcher has claimed the SMS and sits in a hanging request
        assert wait_for(lambda: sslsms_gateway.emulator.history(), timeout=30)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    sslsms_gateway.emulator.faults.clear()
    started = time.monotonic()
    n = Notifier(client_for(sslsms_gateway), recipients=[PHONE], store=store, close_at_exit=None)
    deadline = started + 20
    while len(sslsms_gateway.emulator.messages()) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    took = time.monotonic() - started
    got = pairs(sslsms_gateway)
    assert len(got) == 10 and max(got.values()) == 1
    assert took < DispatchPolicy().lease + 3, f"took over after {took:.1f} s"
    n.close(5)


def test_restart_sends_what_an_earlier_run_left_pending(sslsms_gateway, tmp_path) -> None:
    store = f"sqlite:///{tmp_path}/left.db"
    sslsms_gateway.stop()
    first = Notifier(client_for(sslsms_gateway), recipients=[PHONE], store=store, close_at_exit=None)
    first.alert("left for the next run")
    assert not first.close(0.5)
    sslsms_gateway.start()
    second = Notifier(client_for(sslsms_gateway), recipients=[PHONE], store=store, close_at_exit=None)
    deadline = time.monotonic() + 10
    while not sslsms_gateway.emulator.messages() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [t for _, t in pairs(sslsms_gateway)] == ["left for the next run"]
    second.close(5)


# -- credentials ----------------------------------------------------------------------------
def test_refused_credentials_are_not_retried_and_logged_once(sslsms_gateway, caplog) -> None:
    import logging

    caplog.set_level(logging.WARNING, logger="sslsms_notify")
    client = GatewayClient("wrong-token-0000", sslsms_gateway.sid, base_url=sslsms_gateway.url)
    n = Notifier(client, recipients=[PHONE, "01811111111"], dedup_window=0, close_at_exit=None)
    for i in range(5):
        n.alert(f"with a wrong token {i}")
    assert not n.flush(2)
    assert n.dispatcher.auth_failed.is_set()
    assert sslsms_gateway.emulator.requests == {4001: 1}  # one request, not retried
    lines = [r for r in caplog.records if "credentials" in r.getMessage()]
    assert len(lines) == 1
    assert n.stats()["pending"] == 10  # nothing lost: kept for when the token is fixed
    n.close(0.5)


def test_a_new_run_sends_what_an_earlier_one_left_in_backoff(sslsms_gateway, tmp_path) -> None:
    """The earlier run's token was wrong: its SMS wait out a 60 s pause. The next run, with
    the token fixed, sends them at once (same csms_id), not a minute later."""
    store = f"sqlite:///{tmp_path}/paused.db"
    wrong = GatewayClient("wrong-token-0000", sslsms_gateway.sid, base_url=sslsms_gateway.url)
    first = Notifier(wrong, recipients=[PHONE], store=store, close_at_exit=None)
    first.alert("sent with a wrong token first")
    assert not first.flush(1) and first.dispatcher.auth_failed.is_set()
    first.close(0.5)
    second = Notifier(client_for(sslsms_gateway), recipients=[PHONE], store=store, close_at_exit=None)
    assert second.flush(5)
    assert [t for _, t in pairs(sslsms_gateway)] == ["sent with a wrong token first"]
    second.close(5)
