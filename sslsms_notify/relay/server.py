"""Run the relay: uvicorn in front of a :class:`~sslsms_notify.Notifier` on a shared store.

In the foreground (``sslsms-notify serve``): SIGTERM or SIGINT stops taking
requests, lets the ones under way finish, then closes the pipeline, all within
``shutdown_timeout``; what is not delivered by then stays in the durable outbox.
In a background thread (tests, embedding): :meth:`RelayServer.start` / ``stop``.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any, Self

import uvicorn

from .._log import get_logger
from ..alerting.notifier import Notifier
from .app import RelayApp, RelayOptions
from .settings import RelaySettings

_log = get_logger("sslsms_notify.relay")


class RelayServer:
    def __init__(self, notifier: Notifier, settings: RelaySettings) -> None:
        if not settings.tokens:
            raise ValueError(
                "no relay token: set [relay] tokens in the config file or SSLSMS_RELAY_TOKENS "
                "(producers then send 'Authorization: Bearer <token>')"
            )
        self.notifier = notifier
        self.settings = settings
        options = RelayOptions(
            tokens=settings.tokens,
            max_body=settings.max_body,
            webhook=settings.webhook_options(),
            allow_numbers=settings.allow_numbers,
        )
        self.app = RelayApp(notifier, options)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def _listen(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body go out apart
        try:
            sock.bind((self.settings.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {self.settings.listen}: {exc.strerror or exc}") from None
        self.port = sock.getsockname()[1]
        return sock

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,  # our own metrics count requests; no header ever reaches a log
            lifespan="on",
            timeout_graceful_shutdown=max(1, int(self.settings.shutdown_timeout / 4)),
        )

    def serve_forever(self) -> bool:
        """Serve until SIGTERM/SIGINT, then close the pipeline; True if nothing was left undelivered.

        A quarter of ``shutdown_timeout`` goes to requests under way (uvicorn's
        graceful shutdown; requests waiting for delivery answer at once), half to the
        pipeline's close.
        """
        sock = self._listen()
        _log.info("relay listening", url=self.url, store=repr(self.notifier.store))
        # uvicorn re-raises the signal that stopped it once it is done; our handler takes
        # it, so the pipeline is closed (and the exit code chosen) instead of dying on it.
        previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
        server = uvicorn.Server(self._config())
        self.app.stopping = lambda: bool(server.should_exit)
        try:
            server.run(sockets=[sock])
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return self.notifier.close(max(0.5, self.settings.shutdown_timeout / 2))

    def start(self, timeout: float = 10.0) -> Self:
        sock = self._listen()
        server = uvicorn.Server(self._config())
        self.app.stopping = lambda: bool(server.should_exit)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sslsms-relay", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"relay did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout)
        return self.notifier.close(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
