"""A faithful local SSL Push SMS v3 gateway: core, httpx transport, HTTP server, pytest plugin."""

from .core import (
    DEMO_API_TOKEN,
    DEMO_SID,
    EmulatorConfig,
    EmulatorRequest,
    EmulatorResponse,
    GatewayEmulator,
    GatewayRequest,
    InboxMessage,
)
from .faults import Fault, FaultPlan
from .server import EmulatorApp, EmulatorServer
from .transport import EmulatorTransport

__all__ = [
    "DEMO_API_TOKEN",
    "DEMO_SID",
    "EmulatorApp",
    "EmulatorConfig",
    "EmulatorRequest",
    "EmulatorResponse",
    "EmulatorServer",
    "EmulatorTransport",
    "Fault",
    "FaultPlan",
    "GatewayEmulator",
    "GatewayRequest",
    "InboxMessage",
]
