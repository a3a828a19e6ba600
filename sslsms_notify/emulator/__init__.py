"""A faithful local SSL Push SMS v3 gateway: core, httpx transport, HTTP server, pytest plugin.

The HTTP server (:class:`EmulatorServer`) needs the ``relay`` extra (uvicorn); it is
imported on first use, so the core and the transport work without it.
"""

from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in ("EmulatorApp", "EmulatorServer"):
        from ..extras import require

        require("uvicorn")
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module 'sslsms_notify.emulator' has no attribute {name!r}")
