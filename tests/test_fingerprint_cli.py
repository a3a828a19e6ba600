"""The fingerprint examples (docs/fingerprints.md) end to end: through Notifier.alert and the CLI.

tests/test_fingerprint.py checks each row against ``template_of()``; here each row goes
through the whole pipeline: alert A, then alert B inside the dedup window. "Same alert"
means B is suppressed (one SMS; the CLI exits 3), "different" means B is sent too (two
SMS; the CLI exits 0 both times).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator

from .test_fingerprint import TABLE

CLI = str(Path(sys.executable).parent / "sslsms-notify")
EXIT_DELIVERED, EXIT_SUPPRESSED = 0, 3


def sms_for(first: str, second: str, *, key: str | None = None) -> list[str]:
    """The SMS a phone gets for ``first`` then ``second`` within one dedup window."""
    emulator = GatewayEmulator()
    client = GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator))
    notifier = Notifier(
        client,
        recipients=["01711111111"],
        dedup_window=300,
        per_recipient_limit=None,
        start=False,
        close_at_exit=None,
    )
    try:
        for text in (first, second):
            notifier.alert(text, key=key)
            assert notifier.flush(10)
        # before close(): closing a memory store sends the "+1 more" summary at once
        return [m.text for m in emulator.messages()]
    finally:
        notifier.close(1)


@pytest.mark.parametrize(("a", "b", "same", "why"), TABLE, ids=[f"{a} | {b}" for a, b, _, _ in TABLE])
def test_fingerprint_examples_through_notifier_alert(a: str, b: str, same: bool, why: str) -> None:
    received = sms_for(a, b)
    assert len(received) == (1 if same else 2), f"{why}: {received}"
    assert received[0].endswith(a)


def test_explicit_key_through_notifier_alert() -> None:
    assert len(sms_for("disk 95% full on db1", "disk nearly full on db1", key="disk-full/db1")) == 1
    assert len(sms_for("order 17 failed", "order 18 failed", key=None)) == 1
    assert len(sms_for("order 17 failed", "order 18 failed", key="order/17")) == 1
    assert len(sms_for("same text", "same text", key="a")) == 1


def _cli(gateway, store: Path, *args: str) -> int:
    url = f"sslsms://{gateway.sid}:{gateway.api_token}@01711111111?base_url={gateway.url}&cap=0&store=sqlite:///{store}"
    env = {**os.environ, "HOME": str(store.parent), "XDG_STATE_HOME": str(store.parent), "SSLSMS_URL": ""}
    result = subprocess.run(
        [CLI, "send", "--url", url, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode


def test_fingerprint_examples_through_the_cli(sslsms_gateway, tmp_path) -> None:
    """Every row through `sslsms-notify send` twice, sharing one SQLite store per row."""

    def row(index: int) -> tuple[int, int]:
        a, b, _same, _why = TABLE[index]
        store = tmp_path / f"row{index}" / "state.db"
        store.parent.mkdir()
        return _cli(sslsms_gateway, store, a), _cli(sslsms_gateway, store, b)

    with ThreadPoolExecutor(max_workers=3) as pool:
        codes = list(pool.map(row, range(len(TABLE))))
    expected = [(EXIT_DELIVERED, EXIT_SUPPRESSED if same else EXIT_DELIVERED) for _a, _b, same, _w in TABLE]
    wrong = [
        f"{a!r} then {b!r}: exits {got}, expected {want} ({why})"
        for (a, b, _same, why), got, want in zip(TABLE, codes, expected, strict=True)
        if got != want
    ]
    assert not wrong, "\n".join(wrong)
    expected_sms = sum(1 if same else 2 for _a, _b, same, _why in TABLE)
    assert len(sslsms_gateway.emulator.messages()) == expected_sms


def test_explicit_key_through_the_cli(sslsms_gateway, tmp_path) -> None:
    store = tmp_path / "state.db"
    key = ("--to", "01711111111", "--key", "disk-full/db1")
    assert _cli(sslsms_gateway, store, *key, "disk 95% full on db1") == EXIT_DELIVERED
    assert _cli(sslsms_gateway, store, *key, "disk nearly full on db1") == EXIT_SUPPRESSED
    assert _cli(sslsms_gateway, store, "--key", "disk-full/db2", "disk 95% full on db1") == EXIT_DELIVERED
