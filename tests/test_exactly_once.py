"""A page reported delivered was delivered: every retry path, counted at the gateway.

The spec is the referee:

- 4.2.1, bulk: "batch_csms_id ... For each bulk request there will be a unique
  reference ID for the Client": one id for every number of the request;
- 3.1: 4023 "Duplicate CMS ID" is "CSMS ID is duplicate in the same day".

So once a bulk request may have reached the gateway, a request under its id that
carries other numbers would be answered 4023 without sending them. The rule these
tests hold the pipeline to: a request whose outcome is unknown is resent exactly as
it was (same numbers, same ids), and every phone gets the SMS exactly once, while
what we report (tickets, ``send``, the relay's ``?wait``) matches what the phones got.

Faults, each applied to the next requests the gateway sees: an HTTP 502 page from a
proxy (not processed), a dropped connection (not processed), a timeout (not
processed), and a timeout after the gateway processed the request.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from sslsms_notify import GatewayClient, Notifier, RetryPolicy
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.relay.server import RelayServer
from sslsms_notify.relay.settings import RelaySettings

from .test_cli import CLI

pytestmark = pytest.mark.slow
TEXT = "db1: disk 95% full"
TOKEN = "exactly-once-relay-token-0123456789"
FAST = DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.2)


def numbers(count: int) -> list[str]:
    return [f"0171{i:07d}" for i in range(count)]


def inject(server: EmulatorServer, fault: str, count: int) -> None:
    faults = server.emulator.faults
    if fault == "502":
        faults.http_error(502, count=count)
    elif fault == "drop":
        faults.drop(count=count)
    elif fault == "timeout":
        faults.timeout(count=count, hold=2.0)
    else:  # "processed, then timeout": the gateway accepted the SMS, the answer never came
        faults.timeout(count=count, hold=2.0, after_processing=True)


CASES = [(f, c) for f in ("502", "drop", "timeout") for c in (1, 2, 3)] + [("processed-timeout", 1)]


def client_for(server: EmulatorServer) -> GatewayClient:
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05, total_timeout=5)
    return GatewayClient(server.api_token, server.sid, base_url=server.url, timeout=0.5, retry=retry)


def assert_each_phone_once(server: EmulatorServer, phones: list[str]) -> None:
    got = Counter(m.msisdn for m in server.emulator.messages())
    expected = {"880" + p[1:]: 1 for p in phones}
    assert dict(got) == expected, _requests(server)


def assert_requests_resent_whole(server: EmulatorServer) -> None:
    """Every request under one bulk id carried the very same numbers (spec 4.2.1 + 3.1)."""
    seen: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for request in server.emulator.history():
        if request.endpoint == "bulk":
            seen[request.ids[0]].add(tuple(sorted(request.msisdns)))
    split = {batch: shapes for batch, shapes in seen.items() if len(shapes) > 1}
    assert not split, _requests(server)


def _requests(server: EmulatorServer) -> str:
    return "\n".join(
        f"{r.endpoint} {len(r.msisdns)} numbers {r.ids[:1]} -> {r.outcome}" for r in server.emulator.history()
    )


@pytest.mark.parametrize("size", [2, 3, 150])
@pytest.mark.parametrize(("fault", "count"), CASES)
def test_every_phone_once_after_failures_and_the_report_matches(
    sslsms_gateway, tmp_path, size: int, fault: str, count: int
) -> None:
    phones = numbers(size)
    inject(sslsms_gateway, fault, count)
    notifier = Notifier(
        client_for(sslsms_gateway),
        groups={"team": phones},
        store=f"sqlite:///{tmp_path}/state.db",
        dedup_window=0,
        per_recipient_limit=None,
        dispatch=FAST,
        close_at_exit=None,
    )
    try:
        ticket = notifier.submit(TEXT, groups=["team"])
        assert ticket.wait(10) and ticket.status == "queued"
        assert notifier.flush(60), notifier.stats()
        assert_each_phone_once(sslsms_gateway, phones)
        assert_requests_resent_whole(sslsms_gateway)
        # what we report is what the phones got
        outcomes = notifier.outcomes(ticket.csms_ids)
        assert Counter(outcomes.values()) == {"delivered": size}
        stats = notifier.stats()
        assert (stats["sent"], stats["failed"], stats["pending"]) == (size, 0, 0)
    finally:
        notifier.close(5)


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.parametrize(("fault", "count"), [("502", 2), ("timeout", 3), ("processed-timeout", 1)])
def test_other_stores_keep_a_bulk_whole(sslsms_gateway, request, store: str, fault: str, count: int) -> None:
    phones = numbers(3)
    inject(sslsms_gateway, fault, count)
    url = request.getfixturevalue("redis_url") if store == "redis" else "memory"
    notifier = Notifier(
        client_for(sslsms_gateway),
        groups={"team": phones},
        store=url,
        dedup_window=0,
        per_recipient_limit=None,
        dispatch=FAST,
        close_at_exit=None,
    )
    try:
        ticket = notifier.submit(TEXT, groups=["team"])
        assert notifier.flush(60), notifier.stats()
        assert_each_phone_once(sslsms_gateway, phones)
        assert_requests_resent_whole(sslsms_gateway)
        assert Counter(notifier.outcomes(ticket.csms_ids).values()) == {"delivered": 3}
    finally:
        notifier.close(5)


def test_the_issues_trace_two_502_then_one_phone_missing_cannot_happen(sslsms_gateway, tmp_path) -> None:
    """The reported trace: bulk[a,b], bulk[a,b] (both 502), then bulk[a], bulk[b] under one id.

    The requests the gateway must see instead: bulk[a,b] twice (502), then bulk[a,b]
    once more, accepted. Nothing else.
    """
    phones = numbers(2)
    sslsms_gateway.emulator.faults.http_error(502, count=2)
    notifier = Notifier(
        client_for(sslsms_gateway),
        groups={"team": phones},
        store=f"sqlite:///{tmp_path}/state.db",
        dedup_window=0,
        per_recipient_limit=None,
        dispatch=FAST,
        close_at_exit=None,
    )
    try:
        notifier.alert(TEXT, groups=["team"])
        assert notifier.flush(30)
        history = sslsms_gateway.emulator.history()
        both = tuple(sorted("880" + p[1:] for p in phones))
        assert [(r.endpoint, tuple(sorted(r.msisdns)), r.outcome) for r in history] == [
            ("bulk", both, "http 502"),
            ("bulk", both, "http 502"),
            ("bulk", both, "200"),
        ]
        assert len({r.ids for r in history}) == 1  # one batch_csms_id throughout
        assert_each_phone_once(sslsms_gateway, phones)
    finally:
        notifier.close(5)


# -- what `send` reports ------------------------------------------------------------------
def _send(server: EmulatorServer, tmp_path: Path, phones: list[str]) -> dict[str, Any]:
    url = (
        f"sslsms://{server.sid}:{server.api_token}@{'/'.join(phones)}"
        f"?base_url={server.url}&store=sqlite:///{tmp_path}/cli.db&timeout=0.5"
    )
    env = {**os.environ, "SSLSMS_URL": url, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "st")}
    result = subprocess.run(
        [CLI, "send", "--json", TEXT], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, (result.stdout, result.stderr, _requests(server))
    return json.loads(result.stdout)


@pytest.mark.parametrize(("fault", "count"), [("502", 2), ("timeout", 2), ("processed-timeout", 1)])
def test_send_reports_what_the_phones_got(sslsms_gateway, tmp_path, fault: str, count: int) -> None:
    phones = numbers(3)
    inject(sslsms_gateway, fault, count)
    payload = _send(sslsms_gateway, tmp_path, phones)
    assert payload["outcome"] == "delivered"
    assert (payload["sms"], payload["delivered"]) == (3, 3)
    assert_each_phone_once(sslsms_gateway, phones)
    assert_requests_resent_whole(sslsms_gateway)


# -- what the relay's ?wait reports ----------------------------------------------------------
@pytest.mark.parametrize(("fault", "count"), [("502", 2), ("timeout", 3), ("processed-timeout", 1)])
def test_relay_wait_reports_what_the_phones_got(sslsms_gateway, tmp_path, fault: str, count: int) -> None:
    phones = numbers(150)
    notifier = Notifier(
        client_for(sslsms_gateway),
        groups={"team": phones},
        store=f"sqlite:///{tmp_path}/relay.db",
        dedup_window=0,
        per_recipient_limit=None,
        dispatch=FAST,
        close_at_exit=None,
    )
    relay = RelayServer(notifier, RelaySettings(listen="127.0.0.1:0", tokens=(TOKEN,)))
    relay.start()
    try:
        inject(sslsms_gateway, fault, count)
        answer = httpx.post(
            f"{relay.url}/v1/alerts?wait=60",
            json={"text": TEXT, "groups": ["team"]},
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=90,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["sms"] == {"delivered": 150, "pending": 0, "failed": 0}
        assert_each_phone_once(sslsms_gateway, phones)
        assert_requests_resent_whole(sslsms_gateway)
    finally:
        relay.stop(5)
