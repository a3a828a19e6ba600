"""Forks under load, with each store and each start method: exact counts at the emulator.

The parent raises alerts from several threads (its dispatch thread mid-request,
its intake thread mid-transaction) while it starts 40 children; each child raises
a few alerts of its own and ends. Every SMS must reach the gateway exactly once,
and no child may hang.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sslsms_notify import Notifier
from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.stores.base import OutboxItem, OutboxState
from sslsms_notify.stores.sqlite import SQLiteStore

from . import fork_children
from .fork_children import child_texts, notifier_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]

CHILDREN = 40
#: spawned children share nothing with the parent (no fork hazard) and each is a new
#: interpreter (about 0.3 s of CPU): fewer of them keep the test short
SPAWNED = 12
PER_CHILD = 3
PRODUCERS = 3
#: between two alerts of a producer: about 60 alerts a second in all, which the parent's
#: dispatcher keeps up with, so that a child closing on a shared store sees its outbox empty
PRODUCER_PAUSE = 0.05
#: children alive at once, at most (the machine may have two cores)
AT_ONCE = 6
#: a child still running this long after its start is hung (generous: a busy machine)
CHILD_DEADLINE = 60.0


#: where a forked child writes its threads' stacks when told (SIGUSR1): a hung child says why
STACKS = Path(tempfile.gettempdir()) / f"sslsms-fork-stacks-{os.getpid()}"


def _stacks_on_signal_in_child() -> None:
    with contextlib.suppress(Exception):
        STACKS.mkdir(exist_ok=True)
        out = (STACKS / f"{os.getpid()}.txt").open("w")
        faulthandler.register(signal.SIGUSR1, file=out, all_threads=True)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_stacks_on_signal_in_child)


def stacks_of(pid: int) -> str:
    """The stacks of a hung child's threads (written when it gets SIGUSR1), for the failure message."""
    path = STACKS / f"{pid}.txt"
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "File" not in path.read_text():
            time.sleep(0.05)
    with contextlib.suppress(OSError):
        return path.read_text()
    return "(no stacks)"


@pytest.fixture(autouse=True, scope="module")
def no_stacks_left() -> Iterator[None]:
    yield
    shutil.rmtree(STACKS, ignore_errors=True)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    return str(request.getfixturevalue("redis_url"))


def texts_at(server: EmulatorServer) -> Counter[str]:
    return Counter(m.text.split(": ", 1)[1] for m in server.emulator.messages())


@dataclass
class Load:
    """Threads of the parent raising distinct alerts until stopped."""

    notifier: Notifier
    accepted: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for t in range(PRODUCERS):
            thread = threading.Thread(target=self._produce, args=(t,), daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def _produce(self, t: int) -> None:
        i = 0
        while not self.stop.is_set():
            text = f"parent {t} alert {i}"
            if self.notifier.alert(text, key=text):
                self.accepted.append(text)
            i += 1
            time.sleep(PRODUCER_PAUSE)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)


@dataclass
class Child:
    index: int
    pid: int
    started: float
    poll: Callable[[], int | None]
    kill: Callable[[], None]


def plain_fork(notifier: Notifier, index: int) -> Child:
    """os.fork(): the child alerts, closes the notifier and leaves with os._exit (0: close() said True)."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            fork_children.raise_alerts(notifier, index, PER_CHILD)
            code = 0 if notifier.close(fork_children.CLOSE_AT_EXIT) else 1
        finally:
            os._exit(code)

    def poll() -> int | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if done else None

    def kill() -> None:
        os.kill(pid, 9)
        os.waitpid(pid, 0)

    return Child(index, pid, time.monotonic(), poll, kill)


def mp_child(method: str, server: EmulatorServer, store: str) -> Callable[[Notifier, int], Child]:
    context = multiprocessing.get_context(method)

    def start(notifier: Notifier, index: int) -> Child:
        if method == "fork":
            target: Callable[..., None] = fork_children.inherited_child
            args: tuple[Any, ...] = (notifier, index, PER_CHILD)
        else:
            target = fork_children.spawned_child
            args = (server.url, server.api_token, server.sid, store, index, PER_CHILD)
        process = context.Process(target=target, args=args)
        process.start()

        def kill() -> None:
            process.kill()
            process.join(10)

        assert process.pid is not None
        return Child(index, process.pid, time.monotonic(), lambda: process.exitcode, kill)

    return start


def run_children(
    notifier: Notifier, start: Callable[[Notifier, int], Child], children: int
) -> tuple[dict[int, int], list[str]]:
    """Start ``children`` children, AT_ONCE at most alive; their exit codes, and the stacks of
    those that hung (then killed)."""
    codes: dict[int, int] = {}
    hung: list[str] = []
    alive: list[Child] = []
    started = 0
    while started < children or alive:
        for child in list(alive):
            code = child.poll()
            if code is not None:
                codes[child.index] = code
                alive.remove(child)
            elif time.monotonic() - child.started > CHILD_DEADLINE:
                hung.append(f"child {child.index} (pid {child.pid}):\n{stacks_of(child.pid)}")
                child.kill()
                alive.remove(child)
        if started < children and len(alive) < AT_ONCE:
            alive.append(start(notifier, started))
            started += 1
            continue
        time.sleep(0.01)
    return codes, hung


def wait_child(pid: int) -> int | None:
    """The exit code of a forked child; None if it hung (then it is killed)."""
    deadline = time.monotonic() + CHILD_DEADLINE
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


@pytest.fixture
def parent(sslsms_gateway: EmulatorServer, store_url: str) -> Iterator[Notifier]:
    notifier = notifier_for(sslsms_gateway.url, sslsms_gateway.api_token, sslsms_gateway.sid, store_url)
    try:
        yield notifier
    finally:
        notifier.close(5)


@pytest.mark.parametrize("method", ["os.fork", "fork", "spawn"])
def test_children_under_load_lose_nothing_and_send_nothing_twice(
    sslsms_gateway: EmulatorServer, store_url: str, parent: Notifier, method: str
) -> None:
    children = SPAWNED if method == "spawn" else CHILDREN
    load = Load(parent).start()
    try:
        start = plain_fork if method == "os.fork" else mp_child(method, sslsms_gateway, store_url)
        codes, hung = run_children(parent, start, children)
    finally:
        load.finish()
    assert not hung, "\n".join(hung)
    assert len(codes) == children
    if method == "os.fork" and store_url == "memory":
        # each child delivered its own SMS before close() returned True
        assert set(codes.values()) == {0}, codes
    elif method == "os.fork":
        # 1: close() gave up waiting for the shared outbox to empty; what is left is
        # in the store, and the parent's flush below sends it
        assert set(codes.values()) <= {0, 1}, codes
    else:
        assert set(codes.values()) == {0}, codes
    assert parent.flush(60), parent.stats()
    expected = Counter(load.accepted) + Counter(t for i in range(children) for t in child_texts(i, PER_CHILD))
    assert len(load.accepted) >= 2 * PRODUCERS  # the parent was busy all along
    got = texts_at(sslsms_gateway)
    assert got == expected, (expected - got, got - expected)


def test_a_forked_child_starts_empty_on_a_memory_store(sslsms_gateway: EmulatorServer) -> None:
    notifier = notifier_for(sslsms_gateway.url, sslsms_gateway.api_token, sslsms_gateway.sid, "memory")
    try:
        sslsms_gateway.stop()  # what the parent accepts stays pending in its outbox
        notifier.alert("held by the parent", key="held")
        assert notifier.sync(10)
        assert notifier.stats()["pending"] == 1 and notifier.stats()["windows"] == 1
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                stats = notifier.stats()
                code = 0 if (stats["pending"], stats["windows"], stats["sent"]) == (0, 0, 0) else 1
            finally:
                os._exit(code)
        assert wait_child(pid) == 0
        sslsms_gateway.start()
        assert notifier.flush(30)
        assert texts_at(sslsms_gateway) == Counter(["held by the parent"])  # sent once, by the parent
    finally:
        notifier.close(5)


def _item(csms_id: str) -> OutboxItem:
    return OutboxItem(csms_id, "01711111111", "x", 0.0, 0.0, 0, OutboxState.PENDING, None, "", False, "", 0)


def test_a_forked_childs_sqlite_writes_survive_the_parent_closing(tmp_path) -> None:
    """SQLite keeps per-process lock bookkeeping: a connection must not cross a fork.

    Before the fix the parent's connection was still open at the fork, so the child's
    own connection believed it held locks it did not; when the parent then closed
    (its last connection), it checkpointed and deleted the WAL under the child, and
    the child's later writes were lost (192 of 302 rows remained).
    """
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    store.outbox_add([_item("parent-0")])
    ready, go = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.close(ready)
            for i in range(300):
                store.outbox_add([_item(f"child-{i}")])
                if i == 20:
                    os.write(go, b"x")  # the parent closes while we go on writing
            code = 0
        finally:
            os._exit(code)
    os.close(go)
    assert os.read(ready, 1) == b"x"
    store.outbox_add([_item("parent-1")])
    store.close()
    assert wait_child(pid) == 0
    check = sqlite3.connect(path)
    try:
        rows = check.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        check.close()
    assert rows == 302


# A fresh interpreter: the parent forks 8 children while its first request is under way
# (its dispatch thread importing what the first request needs); each child alerts and
# flushes. Prints the children's exit codes: 0 delivered, 1 flush gave up, "hung".
FIRST_REQUEST = textwrap.dedent(
    """
    import json, os, sys, time
    from sslsms_notify import GatewayClient, Notifier
    url, token, sid, run = sys.argv[1:5]
    n = Notifier(GatewayClient(token, sid, base_url=url, timeout=5), recipients=["01711111111"],
                 close_at_exit=None)
    n.alert(f"run {run} parent", key="parent")
    pids = []
    for i in range(8):
        pid = os.fork()
        if pid == 0:
            code = 2
            try:
                n.alert(f"run {run} child {i}", key=f"child {i}")
                code = 0 if n.flush(10) else 1
            finally:
                os._exit(code)
        pids.append(pid)
        time.sleep(0.0005)
    codes = []
    deadline = time.monotonic() + 30
    for pid in pids:
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            codes.append("hung")
        else:
            codes.append(os.waitstatus_to_exitcode(done[1]))
    print(json.dumps([codes, n.close(10)]))
    """
)


def test_children_forked_during_the_first_request_do_not_hang(sslsms_gateway: EmulatorServer) -> None:
    """The first request imports the "idna" codec (getaddrinfo): a child forked meanwhile
    waited forever for its import lock before it was imported with the package."""
    server = sslsms_gateway
    for run in range(3):
        result = subprocess.run(
            [sys.executable, "-c", FIRST_REQUEST, server.url, server.api_token, server.sid, str(run)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [[0] * 8, True], result.stderr
    senders = ["parent", *(f"child {i}" for i in range(8))]
    expected = Counter(f"run {r} {who}" for r in range(3) for who in senders)
    assert texts_at(server) == expected


def test_a_child_forked_while_a_parent_thread_releases_a_redis_connection_does_not_hang(
    sslsms_gateway: EmulatorServer, redis_url: str
) -> None:
    """The worst moment, made certain: a thread of the parent is inside redis-py's
    ``ConnectionPool.release()`` (it holds the pool's event-dispatcher lock) when the
    main thread forks. redis-py resets the pool at the child's pid but not that lock, so
    before the fix every command of the child waited forever for it (1 child of 40 under
    load in CI; here every time)."""
    parent = notifier_for(sslsms_gateway.url, sslsms_gateway.api_token, sslsms_gateway.sid, redis_url)
    try:
        assert parent.alert("parent before", key="before") and parent.flush(30)
        # redis-py's private lock: the only way to stand exactly where its release() stands
        dispatcher_lock = parent.store._redis.client.connection_pool._event_dispatcher._lock  # type: ignore[attr-defined]
        held, forked = threading.Event(), threading.Event()

        def hold_the_lock() -> None:
            with dispatcher_lock:
                held.set()
                forked.wait(30)

        holder = threading.Thread(target=hold_the_lock, daemon=True)
        holder.start()
        try:
            assert held.wait(30)
            pid = os.fork()
            if pid == 0:
                code = 2
                try:
                    fork_children.raise_alerts(parent, 0, PER_CHILD)
                    code = 0 if parent.flush(30) else 1
                finally:
                    os._exit(code)
        finally:
            forked.set()
            holder.join(30)
        code = wait_child(pid)
        assert code is not None, "the child hung (killed after CHILD_DEADLINE)"
        assert code == 0
        assert parent.flush(30)
        expected = Counter(["parent before", *child_texts(0, PER_CHILD)])
        assert texts_at(sslsms_gateway) == expected
    finally:
        parent.close(5)
