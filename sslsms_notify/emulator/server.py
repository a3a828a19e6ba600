"""The emulator as a real HTTP server (uvicorn), with a control API under ``/__emulator``.

Control API (JSON):
  GET    /__emulator/messages[?msisdn=]   the inbox
  DELETE /__emulator/messages             empty the inbox
  POST   /__emulator/faults               add a fault, e.g.
                                          {"kind": "api_code", "code": 4031, "count": 2}
  GET    /__emulator/faults               active faults
  DELETE /__emulator/faults               clear faults and latency
  POST   /__emulator/config               tps_limit, daily_quota, blocked_msisdns,
                                          blacklisted_ips
  POST   /__emulator/reset                inbox, used ids, counters and faults
  GET    /__emulator/stats                counts by API status code
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from typing import Any, Self
from urllib.parse import parse_qsl

import uvicorn

from .core import DEMO_API_TOKEN, DEMO_SID, EmulatorRequest, GatewayEmulator

CONTROL_PREFIX = "/__emulator"
Scope = dict[str, Any]


class _DropConnection(Exception):
    """Raised after the response started: uvicorn then closes the socket mid-answer."""


class _HideDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DropConnection))


logging.getLogger("uvicorn.error").addFilter(_HideDrops())


class EmulatorApp:
    """A plain ASGI app around :class:`GatewayEmulator`."""

    def __init__(self, emulator: GatewayEmulator) -> None:
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path: str = scope["path"]
        if path.startswith(CONTROL_PREFIX):
            status, payload = self._control(scope["method"], path[len(CONTROL_PREFIX) :], scope, body)
            await self._send(
                send,
                status,
                json.dumps(payload, ensure_ascii=False).encode(),
                {"content-type": "application/json"},
            )
            return
        request = EmulatorRequest(
            method=scope["method"],
            path=path,
            query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)),
            headers={k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]},
            body=body,
            client_ip=(scope.get("client") or ("127.0.0.1", 0))[0],
        )
        answer = self.emulator.handle(request)
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.hold is not None:
            await asyncio.sleep(answer.hold)
            answer.drop = "before"
        if answer.drop:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"1000")],
                }
            )
            raise _DropConnection()
        await self._send(send, answer.status, answer.body, answer.headers)

    @staticmethod
    async def _send(send: Any, status: int, body: bytes, headers: dict[str, str]) -> None:
        raw = [(k.encode(), v.encode()) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def _control(self, method: str, path: str, scope: Scope, body: bytes) -> tuple[int, Any]:
        emulator = self.emulator
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            return 400, {"error": "body is not valid JSON"}
        route = (method, path.rstrip("/"))
        try:
            if route == ("GET", "/messages"):
                query = dict(parse_qsl(scope.get("query_string", b"").decode()))
                messages = emulator.messages(query.get("msisdn"))
                return 200, {"messages": [m.to_dict() for m in messages]}
            if route == ("GET", "/requests"):
                return 200, {"requests": [r.to_dict() for r in emulator.history()]}
            if route == ("DELETE", "/messages"):
                emulator.clear_inbox()
                return 200, {"ok": True}
            if route == ("GET", "/faults"):
                return 200, {
                    "faults": emulator.faults.snapshot(),
                    "latency": emulator.faults.latency,
                }
            if route == ("POST", "/faults"):
                emulator.faults.from_dict(data)
                return 200, {
                    "faults": emulator.faults.snapshot(),
                    "latency": emulator.faults.latency,
                }
            if route == ("DELETE", "/faults"):
                emulator.faults.clear()
                return 200, {"ok": True}
            if route == ("POST", "/config"):
                return 200, self._configure(data)
            if route == ("POST", "/reset"):
                emulator.reset()
                return 200, {"ok": True}
            if route == ("GET", "/stats"):
                return 200, emulator.stats()
            if route == ("GET", "/health"):
                return 200, {"ok": True}
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no control endpoint {method} {CONTROL_PREFIX}{path}"}

    def _configure(self, data: dict[str, Any]) -> dict[str, Any]:
        config = self.emulator.config
        known = {"tps_limit", "daily_quota", "blocked_msisdns", "blacklisted_ips"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        if "tps_limit" in data:
            config.tps_limit = None if data["tps_limit"] is None else int(data["tps_limit"])
        if "daily_quota" in data:
            config.daily_quota = None if data["daily_quota"] is None else int(data["daily_quota"])
        if "blocked_msisdns" in data:
            config.blocked_msisdns = set(data["blocked_msisdns"])
        if "blacklisted_ips" in data:
            config.blacklisted_ips = set(data["blacklisted_ips"])
        return {
            "tps_limit": config.tps_limit,
            "daily_quota": config.daily_quota,
            "blocked_msisdns": sorted(config.blocked_msisdns),
            "blacklisted_ips": sorted(config.blacklisted_ips),
        }


class EmulatorServer:
    """Runs the emulator on a loopback port in a background thread.

    ``stop()`` then ``start()`` again keeps the emulator's state and port, which
    is how tests make the gateway refuse connections for a while.
    """

    def __init__(
        self, emulator: GatewayEmulator | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.emulator = emulator or GatewayEmulator()
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    api_token = DEMO_API_TOKEN
    sid = DEMO_SID

    def start(self, timeout: float = 10.0) -> Self:
        if self._server is not None:
            return self
        sock = self._listen()
        config = uvicorn.Config(
            EmulatorApp(self.emulator),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sslsms-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"emulator server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by accepted connections: uvicorn writes headers and body
        # apart, and Nagle would hold the body for the client's delayed ACK (~40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        return sock

    def stop(self, timeout: float = 10.0) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        server.force_exit = True  # do not wait for held connections: a stop is an outage
        thread.join(timeout)

    def serve_forever(self) -> None:
        """Run in the calling thread until interrupted (the CLI's ``emulator`` command)."""
        config = uvicorn.Config(
            EmulatorApp(self.emulator),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,  # a "hanging" fault must not hold the stop for its 30 s
        )
        uvicorn.Server(config).run(sockets=[self._listen()])

    def client(self, **kwargs: Any) -> Any:
        """A :class:`~sslsms_notify.GatewayClient` for this server."""
        from ..gateway.client import GatewayClient

        return GatewayClient(self.api_token, self.sid, base_url=self.url, **kwargs)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmulatorServer(url={self.url!r})"
