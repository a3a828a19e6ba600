"""The emulator as an httpx transport: the real client, no sockets."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import parse_qsl

import httpx

from .core import EmulatorRequest, EmulatorResponse, GatewayEmulator


def _to_emulator(request: httpx.Request, body: bytes, client_ip: str) -> EmulatorRequest:
    return EmulatorRequest(
        method=request.method,
        path=request.url.path,
        query=dict(parse_qsl(request.url.query.decode("ascii"), keep_blank_values=True)),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        client_ip=client_ip,
    )


def _to_httpx(answer: EmulatorResponse, request: httpx.Request) -> httpx.Response:
    if answer.hold is not None:
        # In process there is nothing to wait for: the client's timeout would fire.
        raise httpx.ReadTimeout("emulated gateway timeout", request=request)
    if answer.drop:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
    return httpx.Response(answer.status, headers=answer.headers, content=answer.body, request=request)


class EmulatorTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Serves both :class:`httpx.Client` and :class:`httpx.AsyncClient`."""

    def __init__(self, emulator: GatewayEmulator | None = None, *, client_ip: str = "127.0.0.1") -> None:
        self.emulator = emulator or GatewayEmulator()
        self.client_ip = client_ip

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.emulator.handle(_to_emulator(request, request.read(), self.client_ip))
        if answer.delay:
            time.sleep(answer.delay)
        return _to_httpx(answer, request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        answer = self.emulator.handle(_to_emulator(request, body, self.client_ip))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return _to_httpx(answer, request)
