"""Shared fixtures. The emulator's own fixtures (``sslsms_gateway``) come from our pytest plugin."""

from __future__ import annotations

import sys
import weakref
from collections.abc import Iterator

import pytest

from sslsms_notify import GatewayClient, Notifier, RetryPolicy
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.001, max_delay=0.01, total_timeout=5)


# -- no Notifier outlives its test ----------------------------------------------------------
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    setattr(item, f"report_{report.when}", report)  # read by the fixture below at teardown
    return report


@pytest.fixture(autouse=True)
def no_notifier_left_running(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every Notifier a test starts is closed when it ends, and a passing test that left one
    running fails: its threads would go on writing to a shared store (one left on the shared
    Redis once failed five later tests)."""
    started: list[weakref.ref[Notifier]] = []
    original = Notifier.__init__

    def tracked(self: Notifier, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        started.append(weakref.ref(self))

    monkeypatch.setattr(Notifier, "__init__", tracked)
    yield
    plugin = sys.modules.get("sslsms_notify.integrations.apprise")
    if plugin is not None:  # its pipelines live until exit by design: the test's end is ours
        plugin.close_pipelines(0)
    left = [n for ref in started if (n := ref()) is not None and not n.closed]
    for notifier in left:
        notifier.close(0)
    call = getattr(request.node, "report_call", None)
    if left and call is not None and call.passed:
        pytest.fail(f"the test left {len(left)} Notifier(s) running: close them in a finally or a fixture")


class Clock:
    """A clock tests move by hand."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator() -> GatewayEmulator:
    return GatewayEmulator()


@pytest.fixture
def client(emulator: GatewayEmulator) -> Iterator[GatewayClient]:
    with GatewayClient(
        DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport(emulator), retry=FAST_RETRY
    ) as c:
        yield c


# -- a real Redis server process ------------------------------------------------------
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def installed(binary: str, package: str) -> str:
    """The path of a program the suite needs; a clear failure (not a skip) when it is missing.

    The README's test command installs every one of them (scripts/test-deps.sh), so a
    missing one is a broken setup, and a test that quietly drops out would hide it.
    """
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed: run scripts/test-deps.sh (apt-get install {package})")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisProcess:
    """A redis-server on a loopback port, in a temporary directory, no persistence."""

    def __init__(self, directory: Path) -> None:
        binary = installed("redis-server", "redis-server")
        self.binary, self.directory = binary, directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    redis_server.flush()
    return redis_server.url
