"""Shared fixtures. The emulator's own fixtures (``sslsms_gateway``) come from our pytest plugin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sslsms_notify import GatewayClient, RetryPolicy
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay=0.001, max_delay=0.01, total_timeout=5)


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
