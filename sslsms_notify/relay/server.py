"""Run the relay: uvicorn in front of a :class:`~sslsms_notify.Notifier` on a shared store.

In the foreground (``sslsms-notify serve``): SIGTERM or SIGINT stops taking
requests, lets the ones under way finish, then closes the pipeline, all within
``shutdown_timeout``; what is not delivered by then stays in the durable outbox.
In a background thread (tests, embedding): :meth:`RelayServer.start` / ``stop``.

Connections are bounded here, because uvicorn does not bound them the way a pager
needs:

- uvicorn's ``limit_concurrency`` accepts every connection (each one a file
  descriptor) and answers ``503`` to *requests* past the limit, ``/healthz``
  included, with a log line each. Idle connections still pile up to the
  file-descriptor limit, where asyncio logs ``socket.accept() out of system
  resource`` with a traceback on every retry.
- uvicorn's ``timeout_keep_alive`` starts only after a response: a connection that
  never sends a byte, or sends its headers one byte at a time, stays open forever.

So the relay serves HTTP/1.1 with uvicorn's h11 protocol, extended by
:class:`_GuardedH11Protocol`: at most ``max_connections`` are open, and a newcomer
past it closes the connection that has waited longest without a request being
answered (an idle one, or one whose request is still trickling in), so a flood of
idle or slow connections cannot shut out ``/healthz`` or a real alert; only when
every connection has a whole request being answered is the newcomer refused with
``503``. A connection silent for ``idle_timeout`` with no request being answered
is closed, as is one whose request has not fully arrived ``read_timeout`` after its
first byte. The default limit comes from ``RLIMIT_NOFILE`` with room for everything
else the process opens, including the connections asyncio accepts in one go before
any can be turned away, so accept() never meets the descriptor limit. What is closed
or refused is logged once when it starts and once with the counts when it stops,
never per connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import threading
import time
from typing import Any, ClassVar, Self

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._log import get_logger
from ..alerting.notifier import Notifier
from .app import RelayApp, RelayOptions
from .settings import RelaySettings

_log = get_logger("sslsms_notify.relay")

#: descriptors kept for what is not an HTTP connection: the store (SQLite database and
#: journal, or a Redis pool and its spool), the gateway's HTTP pool, stdio and log
#: files, the event loop's own, threads' wake-up pipes
FD_RESERVE = 64
#: the most connections ``max_connections = "auto"`` gives, whatever the limit
MAX_AUTO_CONNECTIONS = 4096
#: fewer than this and a relay cannot serve its producers and its health checks
MIN_AUTO_CONNECTIONS = 16
#: accept() batches (each at most the listen backlog) that may be in the air before
#: the connections of the first are turned away: asyncio accepts a batch in one
#: loop turn and makes their protocols in the next ones
ACCEPT_BATCHES_IN_FLIGHT = 4
#: a trouble (connections closed to make room, refused, timed out) is over once it has
#: not happened for this many seconds: its closing line is then written
QUIET_AFTER = 60.0


def fd_limit() -> int:
    """This process's soft ``RLIMIT_NOFILE`` (what systemd's ``LimitNOFILE`` sets).

    Where there is none (Windows: sockets are not file descriptors there), a limit
    that bounds nothing, so ``"auto"`` gives the cap.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 1 << 20
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def connection_budget(soft_limit: int, configured: int | str = "auto") -> tuple[int, int]:
    """``(max_connections, backlog)`` that keep every accept() below ``soft_limit``.

    The listen backlog is also how many connections asyncio accepts in one turn of
    the loop, so it is kept small next to the limit (``soft_limit // 16``, from 8 to
    128), and ``ACCEPT_BATCHES_IN_FLIGHT`` batches are kept free beside the reserve.
    A configured number above what fits raises ``ValueError`` naming the field.
    """
    backlog = max(8, min(128, soft_limit // 16))
    room = soft_limit - FD_RESERVE - ACCEPT_BATCHES_IN_FLIGHT * backlog
    if configured == "auto":
        if room < MIN_AUTO_CONNECTIONS:
            raise ValueError(
                f"max_connections='auto': the file-descriptor limit (RLIMIT_NOFILE {soft_limit}) leaves "
                f"room for {max(room, 0)} connections, fewer than {MIN_AUTO_CONNECTIONS}: raise it "
                "(LimitNOFILE= in the systemd unit, ulimit -n in a shell)"
            )
        return min(room, MAX_AUTO_CONNECTIONS), backlog
    if not isinstance(configured, int) or configured > room:
        raise ValueError(
            f"max_connections={configured!r}: must be at most {max(room, 0)} under this process's "
            f"file-descriptor limit (RLIMIT_NOFILE {soft_limit}, less {FD_RESERVE} for the store, gateway "
            f"and logs and {ACCEPT_BATCHES_IN_FLIGHT}x{backlog} for connections being accepted): lower "
            "it, or raise the limit (LimitNOFILE= in the systemd unit, ulimit -n in a shell)"
        )
    return configured, backlog


class _Trouble:
    """A kind of trouble logged once when it starts and once, with its count, when it stops.

    A flood of connections writes two lines, not a line per connection.
    """

    def __init__(self, started: str, stopped: str) -> None:
        self.started_message, self.stopped_message = started, stopped
        self.count = 0
        self.since: float | None = None
        self.last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def hit(self, loop: asyncio.AbstractEventLoop, **fields: Any) -> None:
        now = time.monotonic()
        self.count += 1
        self.last = now
        if self.since is None:
            self.since = now
            _log.warning(self.started_message, **fields)
            self._timer = loop.call_later(QUIET_AFTER, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        quiet = time.monotonic() - self.last
        if quiet < QUIET_AFTER:
            self._timer = loop.call_later(QUIET_AFTER - quiet, self._check, loop)
        else:
            self.flush()

    def flush(self) -> None:
        """Write the closing line now if the trouble was under way (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.since is not None:
            _log.warning(self.stopped_message, count=self.count, seconds=round(self.last - self.since, 1))
        self.since, self.count = None, 0


class _ConnectionGuard:
    """The connection limit and the two timeouts, shared by every connection of one server."""

    def __init__(self, limit: int, idle_timeout: float, read_timeout: float) -> None:
        self.limit, self.idle_timeout, self.read_timeout = limit, idle_timeout, read_timeout
        #: connections not answering a request (idle, or a request still arriving), the one
        #: waiting longest first
        self.waiting: dict[_GuardedH11Protocol, None] = {}
        self.made_room = _Trouble(
            "connection limit reached: closing the connections idle longest to make room",
            "connections closed to make room under the connection limit",
        )
        self.refused = _Trouble(
            "connection limit reached with a request being answered on every connection: "
            "new connections get 503",
            "connections refused with 503 under the connection limit",
        )
        self.timed_out = _Trouble(
            "closing connections whose request does not arrive within read_timeout",
            "connections closed for a request slower than read_timeout",
        )

    def admit(self, protocol: _GuardedH11Protocol, connections: set[Any]) -> bool:
        """Whether a new connection (already in ``connections``) may stay; makes room if need be."""
        self.waiting[protocol] = None
        if len(connections) <= self.limit:
            return True
        oldest = next(iter(self.waiting))
        if oldest is not protocol:
            self.forget(oldest)
            connections.discard(oldest)
            oldest.transport.close()
            self.made_room.hit(protocol.loop, max_connections=self.limit)
            return True
        self.forget(protocol)
        connections.discard(protocol)
        protocol.transport.write(_BUSY)
        protocol.transport.close()
        self.refused.hit(protocol.loop, max_connections=self.limit)
        return False

    def idle(self, protocol: _GuardedH11Protocol) -> None:
        self.waiting.pop(protocol, None)
        self.waiting[protocol] = None  # now the newest

    def busy(self, protocol: _GuardedH11Protocol) -> None:
        self.waiting.pop(protocol, None)

    def forget(self, protocol: _GuardedH11Protocol) -> None:
        self.waiting.pop(protocol, None)

    def flush(self) -> None:
        for trouble in (self.made_room, self.refused, self.timed_out):
            trouble.flush()


_BUSY_BODY = json.dumps(
    {"error": "the relay has a request under way on every connection it allows; retry"}
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the connection limit, ``idle_timeout`` and ``read_timeout``.

    A connection is *waiting* (may be closed to make room) from its opening, and from
    each response, until a whole request has arrived; then it is *busy* until answered.
    While waiting, silence is bounded by ``idle_timeout`` (uvicorn's keep-alive timer,
    armed on opening too) and a request, from its first byte, by ``read_timeout``.
    It relies on these parts of :class:`~uvicorn.protocols.http.h11_impl.H11Protocol`:
    ``cycle`` (the request under way: ``more_body``, ``response_complete``),
    ``timeout_keep_alive_task`` / ``timeout_keep_alive_handler`` (its keep-alive timer,
    armed here on opening as well), ``handle_events`` and ``on_response_complete``.
    """

    guard: ClassVar[_ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's keep-alive timer is our idle timer (uvicorn types it int; call_later takes float)
        self.timeout_keep_alive = self.guard.idle_timeout  # type: ignore[assignment]
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self, self.connections):
            return
        # uvicorn arms its keep-alive timer only after a response: a connection that never
        # sends a byte would stay open for good
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def data_received(self, data: bytes) -> None:
        if self._read_timer is None and self in self.guard.waiting:
            self._arm_read_timer()  # the first byte of a request: all of it within read_timeout
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        self.guard.forget(self)
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        cycle = self.cycle
        if (
            cycle is not None
            and not cycle.more_body
            and not cycle.response_complete
            and not self.transport.is_closing()
        ):
            # all of the request arrived: answering takes what it takes, and a request being
            # answered (its alerts perhaps accepted) is never closed to make room
            self._cancel_read_timer()
            self.guard.busy(self)

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self.guard.idle(self)  # uvicorn's keep-alive timer now watches for silence
        super().on_response_complete()

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.guard.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.guard.timed_out.hit(self.loop, read_timeout=self.guard.read_timeout)
            self.transport.close()


def _protocol_class(guard: _ConnectionGuard) -> type[asyncio.Protocol]:
    """A protocol class bound to one server's guard (uvicorn makes protocols from a class)."""
    return type("RelayH11Protocol", (_GuardedH11Protocol,), {"guard": guard})


class _Repeats(logging.Filter):
    """At most one record a minute per logger and event; the next one says how many were held.

    For lines that come once per connection or per attempt: uvicorn's and asyncio's
    (``Invalid HTTP request received.``, ``socket.accept() out of system resource``
    with its traceback), and the gateway client's per-retry line when ``--log-level debug``
    shows it (a line per retry, for as long as an outage lasts). A flood of bad connections or a
    long outage must not flood the log. Our own lines are told apart by their event
    (``event='...'``, the first field), not by the values after it.
    """

    def __init__(self, every: float = QUIET_AFTER) -> None:
        super().__init__()
        self.every = every
        self._last: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        event = message.split("' ", 1)[0] if message.startswith("event='") else message
        key = (record.name, event)
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get(key, (-self.every, 0))
            if now - last < self.every:
                self._last[key] = (last, held + 1)
                return False
            self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} more like this in the last {now - last:.0f} s)"
            record.args = None
        return True


#: loggers whose lines come once per connection or per retry: rate-limited while ``serve`` runs
_REPEATING_LOGGERS = ("uvicorn.error", "asyncio", "sslsms_notify.gateway")


class RelayServer:
    def __init__(self, notifier: Notifier, settings: RelaySettings) -> None:
        if not settings.tokens:
            raise ValueError(
                "no relay token: set [relay] tokens in the config file or SSLSMS_RELAY_TOKENS "
                "(producers then send 'Authorization: Bearer <token>')"
            )
        self.notifier = notifier
        self.settings = settings
        #: open connections at most, and the listen backlog (see :func:`connection_budget`)
        self.max_connections, self.backlog = connection_budget(fd_limit(), settings.max_connections)
        options = RelayOptions(
            tokens=settings.tokens,
            max_body=settings.max_body,
            webhook=settings.webhook_options(),
            allow_numbers=settings.allow_numbers,
            watchdog_alertname=settings.watchdog_alertname,
            watchdog_timeout=settings.watchdog_timeout,
        )
        self.app = RelayApp(notifier, options)
        self._guard = _ConnectionGuard(self.max_connections, settings.idle_timeout, settings.read_timeout)
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
            # uvicorn's own lines go to the "uvicorn.*" loggers as the application (or
            # `serve`) set them up; no dictConfig of uvicorn's replaces that set-up
            log_config=None,
            access_log=False,  # our own metrics count requests; no header ever reaches a log
            lifespan="on",
            # the guarded protocol is h11's, and the accept arithmetic of connection_budget
            # is asyncio's: neither httptools nor uvloop, even when installed
            http=_protocol_class(self._guard),
            loop="asyncio",
            backlog=self.backlog,
            timeout_graceful_shutdown=max(1, int(self.settings.shutdown_timeout / 4)),
        )

    def serve_forever(self) -> bool:
        """Serve until SIGTERM/SIGINT, then close the pipeline; True if nothing was left undelivered.

        A quarter of ``shutdown_timeout`` goes to requests under way (uvicorn's
        graceful shutdown; requests waiting for delivery answer at once), half to the
        pipeline's close.
        """
        sock = self._listen()
        _log.info(
            "relay listening",
            url=self.url,
            store=repr(self.notifier.store),
            max_connections=self.max_connections,
            fd_limit=fd_limit(),
        )
        # uvicorn re-raises the signal that stopped it once it is done; our handler takes
        # it, so the pipeline is closed (and the exit code chosen) instead of dying on it.
        previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
        repeats = _Repeats()
        for name in _REPEATING_LOGGERS:
            logging.getLogger(name).addFilter(repeats)
        server = uvicorn.Server(self._config())
        self.app.stopping = lambda: bool(server.should_exit)
        try:
            server.run(sockets=[sock])
            # still under the filter: the pipeline may retry a failing gateway while it closes
            return self.notifier.close(max(0.5, self.settings.shutdown_timeout / 2))
        finally:
            self._guard.flush()
            for number, handler in previous.items():
                signal.signal(number, handler)
            for name in _REPEATING_LOGGERS:
                logging.getLogger(name).removeFilter(repeats)

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
            self._guard.flush()
        return self.notifier.close(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
