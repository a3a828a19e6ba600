"""pytest fixtures for testing your alerting code against the emulator.

Loaded by pytest automatically wherever the package is installed; the HTTP server
needs the ``test`` (or ``relay``) extra, e.g. ``pip install ".[test]"`` in a checkout.
``sslsms_gateway.client()`` is a :class:`~sslsms_notify.GatewayClient` for it:

    def test_pages_oncall(sslsms_gateway):
        client = sslsms_gateway.client()
        client.send_single("01712345678", "disk full")
        assert sslsms_gateway.emulator.messages()[0].text == "disk full"

``sslsms_gateway`` is a real HTTP server on loopback (one per test session,
reset before each test); ``sslsms_emulator`` is the in-process core with an
httpx transport at ``.transport``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .core import GatewayEmulator
from .transport import EmulatorTransport

if TYPE_CHECKING:
    from .server import EmulatorServer


@pytest.fixture(scope="session")
def _sslsms_gateway_server() -> Iterator[EmulatorServer]:
    # Imported here: pytest loads this plugin wherever the package is installed, and the
    # HTTP server needs the "test" or "relay" extra (uvicorn); the core does not.
    from ..extras import require

    require("uvicorn")
    from .server import EmulatorServer

    with EmulatorServer() as server:
        yield server


@pytest.fixture
def sslsms_gateway(_sslsms_gateway_server: EmulatorServer) -> Iterator[EmulatorServer]:
    """The emulator served over HTTP on 127.0.0.1; empty inbox, no faults, no limits."""
    server = _sslsms_gateway_server
    server.start()  # again, if a test stopped it to simulate an outage (a no-op otherwise)
    server.emulator.reset()
    config = server.emulator.config
    config.tps_limit = config.daily_quota = None
    config.blocked_msisdns.clear()
    config.blacklisted_ips.clear()
    yield server
    server.emulator.faults.clear()


@pytest.fixture
def sslsms_emulator() -> GatewayEmulator:
    """A fresh in-process emulator; ``EmulatorTransport(sslsms_emulator)`` serves httpx clients."""
    emulator = GatewayEmulator()
    emulator.transport = EmulatorTransport(emulator)  # type: ignore[attr-defined]
    return emulator
