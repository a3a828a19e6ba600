"""The SQLite state file among processes: opened by several at once, deleted or replaced in use.

Real processes on real files, every SMS counted at the emulator; and how the rows of
two files are merged when one replaces the other.
"""

from __future__ import annotations

import json
import os
import queue
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.stores.base import Digest, GroupBuffer, OutboxItem, OutboxState, Tx, Window
from sslsms_notify.stores.sqlite import SQLiteStore

from .fork_children import notifier_for as _notifier_for

pytestmark = pytest.mark.slow

#: a worker that has not answered in this long is stuck (generous: a busy 2-core machine)
ANSWER_TIMEOUT = 60.0
ROUNDS = 30

_SETUP = """
import json, os, sys
from sslsms_notify import GatewayClient, Notifier, RetryPolicy
from sslsms_notify.alerting import DispatchPolicy
url, token, sid = sys.argv[1:4]
client = GatewayClient(
    token, sid, base_url=url, timeout=2,
    retry=RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.05, total_timeout=2),
)
def notifier(store):
    return Notifier(
        client, recipients=["01711111111"], store=store, per_recipient_limit=None,
        close_at_exit=None, dedup_window=600,
        dispatch=DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.3, lease=2),
    )
"""

# Each line: a new file, a file to wait for, a tag. Waits until the file appears (all
# workers at once), opens a notifier on the new file, stores the tag's alert, closes.
OPENER = _SETUP + textwrap.dedent(
    """
    print("ready", flush=True)
    for line in sys.stdin:
        path, go, tag = line.split()
        print("armed", flush=True)
        while not os.path.exists(go):
            os.sched_yield()
        try:
            n = notifier("sqlite:///" + path)
            stored = n.alert(tag, key=tag) and n.sync(10)
        except Exception as exc:
            print(f"failed: {type(exc).__name__}: {exc}", flush=True)
            continue
        # False when another process's SMS is still pending in the shared outbox: it stays
        # there for that process (or the next one) to send
        delivered = n.close(20)
        print(f"stored={stored} delivered={delivered}", flush=True)
    """
)

# One notifier on the store given; JSON commands in, JSON answers out.
DRIVER = _SETUP + textwrap.dedent(
    """
    n = notifier(sys.argv[4])
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        op, arg = json.loads(line)
        if op == "alert":
            result = all([n.alert(t, key=t) for t in arg]) and n.sync(10)
        elif op == "reopened":
            result = n.store.reopened
        elif op == "flush":
            result = n.flush(arg)
        else:
            result = n.close(arg)
        print(json.dumps(result), flush=True)
    """
)


class Worker:
    """A Python process running ``script``: lines in, lines out, each answer awaited with a deadline."""

    def __init__(self, script: str, server: EmulatorServer, *args: str, log: Path | None = None) -> None:
        self.log = log
        self._stderr: IO[str] | None = log.open("w") if log is not None else None
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, server.url, server.api_token, server.sid, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.strip())

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def answer(self) -> str:
        try:
            return self._lines.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"worker {self.process.pid} gave no answer (hung?)") from None

    def call(self, op: str, arg: Any = None) -> Any:
        self.send(json.dumps([op, arg]))
        return json.loads(self.answer())

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        if self._stderr is not None:
            self._stderr.close()


def notifier_for(server: EmulatorServer, store: str) -> Any:
    return _notifier_for(server.url, server.api_token, server.sid, store)


def texts_at(server: EmulatorServer) -> Counter[str]:
    return Counter(m.text.split(": ", 1)[1] for m in server.emulator.messages())


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


@pytest.mark.parametrize("processes", [2, 3])
def test_processes_opening_one_new_file_at_once_all_succeed(
    sslsms_gateway: EmulatorServer, tmp_path: Path, workers: list[Worker], processes: int
) -> None:
    workers += [Worker(OPENER, sslsms_gateway) for _ in range(processes)]
    for worker in workers:
        assert worker.answer() == "ready"
    outcomes: Counter[str] = Counter()
    for r in range(ROUNDS):
        path = tmp_path / f"round-{r}.db"
        if r % 2:
            path.touch()  # an empty file, as a crash right after creating it leaves: no directory lock
        go = tmp_path / f"go-{r}"
        for i, worker in enumerate(workers):
            worker.send(f"{path} {go} round-{r}-process-{i}")
        for worker in workers:
            assert worker.answer() == "armed"
        go.touch()
        outcomes.update(worker.answer().split(" delivered=")[0] for worker in workers)
    assert outcomes == Counter({"stored=True": processes * ROUNDS})
    for r in range(ROUNDS):
        path = tmp_path / f"round-{r}.db"
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            left = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        finally:
            db.close()
        if left:  # a last closer gave up early: the next process on the file sends it
            with notifier_for(sslsms_gateway, f"sqlite:///{path}") as n:
                assert n.flush(20)
    expected = Counter(f"round-{r}-process-{i}" for r in range(ROUNDS) for i in range(processes))
    assert texts_at(sslsms_gateway) == expected


def _delete(path: Path) -> None:
    path.unlink()


def _delete_with_sidecars(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        path.with_name(name).unlink(missing_ok=True)


def _replace(path: Path) -> None:
    other = path.with_name("restored.db")
    SQLiteStore(other).close()  # a valid, empty state file, as a restore from an old backup
    os.replace(other, path)


@pytest.mark.parametrize("change", [_delete, _delete_with_sidecars, _replace], ids=lambda f: f.__name__[1:])
def test_state_file_deleted_or_replaced_under_two_processes(
    sslsms_gateway: EmulatorServer, tmp_path: Path, workers: list[Worker], change: Any
) -> None:
    path = tmp_path / "state.db"
    store = f"sqlite:///{path}"
    sslsms_gateway.stop()  # nothing can be delivered: SMS wait in the outbox
    a = Worker(DRIVER, sslsms_gateway, store, log=tmp_path / "a.log")
    b = Worker(DRIVER, sslsms_gateway, store, log=tmp_path / "b.log")
    workers += [a, b]
    assert a.answer() == b.answer() == '"ready"'
    assert a.call("alert", ["a1", "a2", "repeat"]) is True
    assert b.call("alert", ["b1", "b2", "repeat"]) is True  # "repeat": a repeat of a's, suppressed

    change(path)
    # Both go on as if nothing happened: each notices the file is not its own on its next
    # use of the store, and moves (a) or joins (b) the one now at the path.
    assert a.call("alert", ["a3", "repeat"]) is True
    assert b.call("alert", ["b3", "repeat"]) is True
    assert (a.call("reopened"), b.call("reopened")) == (1, 1)
    assert a.call("alert", ["a4", "repeat"]) is True
    assert b.call("alert", ["b4", "repeat"]) is True
    assert a.call("close", 0.5) is False  # the gateway is down: a's SMS stay in the outbox

    sslsms_gateway.start()
    assert b.call("flush", 30) is True  # a's SMS too: they are in the one file both use
    assert b.call("close", 5) is True
    expected = Counter(["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4", "repeat"])
    assert texts_at(sslsms_gateway) == expected
    a.stop()
    b.stop()
    for worker in (a, b):
        assert worker.log is not None
        lines = [line for line in worker.log.read_text().splitlines() if "while in use; reopened" in line]
        assert len(lines) == 1, worker.log.read_text()
    check = SQLiteStore(path)
    try:
        assert check.outbox_counts().pending == 0 and check.outbox_counts().dead == 0
    finally:
        check.close()


def _write(store: SQLiteStore, window: Window, rate: float, digest: Digest, group: GroupBuffer) -> None:
    def fn(tx: Tx) -> None:
        tx.windows.put(window.key, window)
        tx.rates.put("cap:0171", rate)
        tx.digests.put(digest.msisdn, digest)
        tx.groups.put(group.name, group)

    store.transact(fn)


def _sms(csms_id: str, state: OutboxState = OutboxState.PENDING) -> OutboxItem:
    return OutboxItem(csms_id, "01711111111", csms_id, 0.0, 0.0, 0, state, None, "", False, "", 0)


def test_a_replacing_file_keeps_what_it_holds_and_gets_ours_merged_in(tmp_path: Path) -> None:
    path, restored = tmp_path / "state.db", tmp_path / "restored.db"
    ours = SQLiteStore(path)
    _write(
        ours,
        Window("k", 100.0, 3, 10.0, 20.0, "ours", ("01711111111",)),
        5.0,
        Digest("01711111111", 2, 10.0, ("a", "b"), 50.0),
        GroupBuffer("oncall", 40.0, 2, ("x",), ("01711111111",)),
    )
    ours.outbox_add([_sms("ours"), _sms("both")])
    theirs = SQLiteStore(restored)
    _write(
        theirs,
        Window("k", 200.0, 2, 5.0, 30.0, "theirs", ("01722222222",)),
        7.0,
        Digest("01711111111", 1, 12.0, ("c",), 60.0),
        GroupBuffer("oncall", 30.0, 1, ("y",), ("01722222222",)),
    )
    theirs.outbox_add([_sms("theirs"), _sms("both", OutboxState.DEAD)])
    theirs.close()
    os.replace(restored, path)

    counts = ours.outbox_counts()  # the next use notices, and moves
    assert ours.reopened == 1
    # an SMS in both keeps the state the file at the path has; the rest come along
    assert (counts.pending, counts.dead) == (2, 1)
    assert {i.csms_id: i.state for i in ours.outbox_list()} == {
        "ours": OutboxState.PENDING,
        "theirs": OutboxState.PENDING,
        "both": OutboxState.DEAD,
    }
    assert ours.window_count() == 1
    found: dict[str, Any] = {}

    def read(tx: Tx) -> None:
        found.update(
            window=tx.windows.get("k"),
            rate=tx.rates.get("cap:0171"),
            digest=tx.digests.get("01711111111"),
            group=tx.groups.get("oncall"),
        )

    ours.transact(read)
    # the rules of stores/merge.py, as for a Redis spool moving back: repeats counted on
    # both sides are all reported, by the earlier end; the later last text; every number
    assert found["window"] == Window("k", 100.0, 5, 5.0, 30.0, "theirs", ("01722222222", "01711111111"))
    assert found["rate"] == 7.0  # neither meter books beyond now: the file's own stays
    assert found["digest"] == Digest("01711111111", 3, 10.0, ("a", "b", "c"), 50.0)  # earlier first
    assert found["group"] == GroupBuffer("oncall", 30.0, 3, ("y", "x"), ("01722222222", "01711111111"))
    ours.close()


def test_a_relative_path_stays_the_file_it_named_when_the_directory_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    store = SQLiteStore("sqlite:///state.db")
    try:
        store.outbox_add([_sms("one")])
        monkeypatch.chdir(tmp_path / "elsewhere")  # a daemon's chdir("/"), say
        store.outbox_add([_sms("two")])
        assert store.reopened == 0 and store.outbox_counts().pending == 2
        assert not (tmp_path / "elsewhere" / "state.db").exists()
    finally:
        store.close()


def test_no_new_file_possible_keeps_the_old_one_then_moves_when_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from sslsms_notify.stores import sqlite

    monkeypatch.setattr(sqlite, "CARRY_RETRY", 0.0)
    caplog.set_level(logging.WARNING, logger="sslsms_notify")
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    try:
        store.outbox_add([_sms("before")])
        path.unlink()
        path.mkdir()  # nothing can be opened there
        store.outbox_add([_sms("meanwhile")])
        store.outbox_add([_sms("still")])
        assert store.reopened == 0 and store.outbox_counts().pending == 3  # the old file, still whole
        failures = [r for r in caplog.records if "no new one could be opened" in r.getMessage()]
        assert len(failures) == 1  # said once, tried on every use
        path.rmdir()
        assert store.outbox_counts().pending == 3
        assert store.reopened == 1
    finally:
        store.close()
    check = SQLiteStore(path)
    try:
        assert sorted(i.csms_id for i in check.outbox_list()) == ["before", "meanwhile", "still"]
    finally:
        check.close()
