"""A store that refuses writes loses nothing silently: alerts wait in memory, or are counted.

Real files on real filesystems: a SQLite state file made immutable (``chattr +i``) for a
few seconds, and one on a tiny tmpfs that fills up. Counted exactly at the emulator.
Both need root (chattr, mount); elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslsms_notify import GatewayClient, Notifier, RetryPolicy
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import EmulatorServer

pytestmark = pytest.mark.slow
PHONE = "01711111111"


def _client(server: EmulatorServer) -> GatewayClient:
    retry = RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05, total_timeout=5)
    return GatewayClient(server.api_token, server.sid, base_url=server.url, timeout=5, retry=retry)


def _notifier(server: EmulatorServer, store: str, **options) -> Notifier:
    return Notifier(
        _client(server),
        recipients=[PHONE],
        store=store,
        dedup_window=0,
        per_recipient_limit=None,
        dispatch=DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.2),
        close_at_exit=None,
        **options,
    )


def _texts(server: EmulatorServer) -> Counter[str]:
    return Counter(m.text.split(": ", 1)[-1] for m in server.emulator.messages())


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    existing = [str(p) for p in paths if p.exists()]
    done = subprocess.run(["chattr", "+i", *existing], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not allowed here ({done.stderr.strip()}): needs root on ext4/xfs")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", *existing], check=True)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)]
    done = subprocess.run(command, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_state_file_refusing_writes_for_4s_loses_nothing(sslsms_gateway, tmp_path, caplog) -> None:
    """600 distinct alerts at 100/s; the file (and its WAL) immutable for 4 s in the middle."""
    db = tmp_path / "state.db"
    notifier = _notifier(sslsms_gateway, f"sqlite:///{db}")
    try:
        with caplog.at_level("WARNING", logger="sslsms_notify"):
            for i in range(100):
                assert notifier.alert(f"event {i}", key=f"k{i}")
                time.sleep(0.01)
            assert notifier.sync(10)
            with immutable(db, Path(f"{db}-wal")):
                refused_until = time.monotonic() + 4
                i = 100
                while time.monotonic() < refused_until:
                    assert notifier.alert(f"event {i}", key=f"k{i}")
                    i += 1
                    time.sleep(0.01)
                held = notifier.stats()["held"]
            for j in range(i, 600):
                assert notifier.alert(f"event {j}", key=f"k{j}")
                time.sleep(0.01)
            assert notifier.flush(60), notifier.stats()
        assert held > 0  # the store did refuse while immutable
        got = _texts(sslsms_gateway)
        assert len(got) == 600 and set(got.values()) == {1}
        stats = notifier.stats()
        assert (stats["sent"], stats["dropped"], stats["held"], stats["lost"]) == (600, 0, 0, 0)
        messages = [r.getMessage() for r in caplog.records]
        assert sum("the store refused writes" in m for m in messages) == 1
        assert sum("the store takes writes again" in m for m in messages) == 1
    finally:
        notifier.close(5)


def test_refused_writes_are_held_and_flush_says_false_until_stored(sslsms_gateway, tmp_path) -> None:
    db = tmp_path / "state.db"
    notifier = _notifier(sslsms_gateway, f"sqlite:///{db}")
    try:
        notifier.alert("first", key="first")
        assert notifier.flush(10)
        with immutable(db, Path(f"{db}-wal")):
            ticket = notifier.submit("while refused", key="refused")
            assert not notifier.flush(1)  # accepted, not durable: not flushed
            assert not ticket.done and notifier.stats()["held"] == 1
        assert ticket.wait(10) and ticket.status == "queued"
        assert notifier.flush(10)
        assert sorted(_texts(sslsms_gateway)) == ["first", "while refused"]
    finally:
        notifier.close(5)


def test_a_full_filesystem_counts_every_alert_it_could_not_keep(sslsms_gateway, tiny_fs, caplog) -> None:
    """3,000 alerts into a SQLite file on a 256 KB tmpfs that fills up, the gateway slow.

    Whatever fits is delivered once; the rest is dropped (queue full while the store
    refuses) or lost at close (held, never stored), each counted by reason, and close()
    says False. Nothing vanishes.
    """
    sslsms_gateway.emulator.faults.latency = 0.02
    notifier = _notifier(sslsms_gateway, f"sqlite:///{tiny_fs}/state.db", queue_size=500)
    total = 3000
    try:
        with caplog.at_level("WARNING", logger="sslsms_notify"):
            accepted = sum(notifier.alert(f"alert {i} " + "x" * 200, key=f"k{i}") for i in range(total))
            notifier.flush(15)
            closed = notifier.close(5)
        stats = notifier.stats()
        delivered = _texts(sslsms_gateway)
        assert set(delivered.values()) <= {1}  # nothing twice
        assert stats["dropped"] == total - accepted
        # every alert is delivered, still in the outbox on disk, dropped or lost: each counted.
        # (An SMS can be both delivered and still in the outbox: the disk refused to record
        # it sent. The next process resends it under its csms_id and the gateway says
        # "Duplicate CMS ID": still one SMS on the phone.)
        kept = set(delivered) | _left_in(tiny_fs)
        assert len(kept) + stats["dropped"] + stats["lost"] == total, stats
        assert closed is (len(delivered) == total)
        if len(delivered) < total:
            messages = " ".join(r.getMessage() for r in caplog.records)
            assert "the store refused writes" in messages
    finally:
        notifier.close(1)


def _left_in(directory: Path) -> set[str]:
    """The texts of SMS still in the outbox on disk (the next process sends them)."""
    import sqlite3

    db = sqlite3.connect(directory / "state.db")
    try:
        rows = db.execute("SELECT text FROM outbox WHERE state != 'dead'").fetchall()
        return {text.split(": ", 1)[-1] for (text,) in rows}
    finally:
        db.close()
