"""The relay's HTTP intake: a plain ASGI app around one :class:`~sslsms_notify.Notifier`.

Routes:

    POST /v1/alerts[?wait=SECONDS]   our own API: one alert or a list
    POST /v1/alertmanager            Prometheus Alertmanager's webhook (payload version 4)
    POST /v1/grafana                 Grafana's webhook contact point
    POST /v1/heartbeats/{name}       a heartbeat's ping; GET /v1/heartbeats lists them
    POST /v1/ack/{code}              acknowledge an alert that would escalate (see .oncall)
    GET, POST /v1/silences           list and add silences (see :mod:`.silences`)
    DELETE /v1/silences/{id}         expire one
    GET  /healthz                    liveness: the process can take alerts (no token needed)
    GET  /readyz                     readiness: where alerts go now, ok or spooling (no token needed)
    GET  /metrics                    Prometheus text format

An intake answers **202 once every alert of the body is decided and in the
store** (an SMS in the outbox, or a repeat counted in its dedup window), so a
relay that dies right after answering loses nothing on a durable store. With
``?wait=SECONDS`` (at most 60) ``/v1/alerts`` also waits for the gateway's
outcome of the SMS it created and answers 200 with it: that is how
``sslsms-notify send --relay`` keeps its exit codes.

Security: every route but ``/healthz`` and ``/readyz`` needs exactly one ``Authorization: Bearer
<token>`` header, compared in constant time with every configured token; bodies are
read up to ``max_body`` bytes and refused beyond (413) before they are parsed, and a
request answered before its body was read has its connection closed rather than the
rest of the body read; no header, token or body is ever logged.

``/healthz`` and ``/readyz`` answer within :data:`.health.HEALTH_TIMEOUT` whatever the store
does, and ``/metrics`` (which reads the store's counts) within :data:`METRICS_TIMEOUT`:
each runs its store reads in its own thread, one at a time, and says what did not answer.
Both health routes answer ``503`` only when nothing can take an alert: a Redis store
whose server is away while its spool takes the alerts is ``spooling``, with ``200``.

No web framework: six routes, and owning the body read is what lets the size
limit hold while receiving rather than after.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from .._log import get_logger
from ..alerting.delivery import await_sms
from ..alerting.notifier import Notifier, Ticket
from ..gateway.msisdn import is_valid_msisdn
from ..outcomes import Outcome, SmsState
from . import silences
from .errors import HTTPError
from .health import Health, Probe
from .metrics import RelayMetrics
from .oncall import OnCallRoutes
from .payloads import (
    AlertSpec,
    PayloadError,
    WebhookOptions,
    decode_body,
    parse_alertmanager,
    parse_alerts,
    parse_grafana,
)

_log = get_logger("sslsms_notify.relay")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_WAIT = 60.0
#: ``/metrics`` answers within this many seconds (Prometheus' default scrape timeout is 10 s)
METRICS_TIMEOUT = 5.0


@dataclass(frozen=True)
class RelayOptions:
    #: bearer tokens a producer may present (any one of them)
    tokens: tuple[str, ...]
    #: the largest request body accepted, in bytes
    max_body: int = 1 << 20
    #: how alert webhooks map to alerts (resolved alerts, severity and groups labels)
    webhook: WebhookOptions = field(default_factory=WebhookOptions)
    #: seconds to wait for the intake to decide a body's alerts before answering 503
    accept_timeout: float = 10.0
    #: whether producers may name phone numbers directly (else only configured groups)
    allow_numbers: bool = False
    #: the alertname taken as the monitoring system's heartbeat ("" : none), and its timeout
    watchdog_alertname: str = "Watchdog"
    watchdog_timeout: float = 600.0

    def __post_init__(self) -> None:
        if not self.tokens or not all(isinstance(t, str) and len(t) >= 16 for t in self.tokens):
            raise ValueError("relay tokens: at least one, each at least 16 characters")
        if self.max_body < 1024:
            raise ValueError(f"max_body={self.max_body!r}: must be at least 1024 bytes")

    def __repr__(self) -> str:
        return f"RelayOptions(tokens=<{len(self.tokens)} hidden>, max_body={self.max_body})"


class RelayApp:
    def __init__(
        self, notifier: Notifier, options: RelayOptions, metrics: RelayMetrics | None = None
    ) -> None:
        self.notifier = notifier
        self.options = options
        self.metrics = metrics or RelayMetrics(notifier)
        self._tokens = [t.encode() for t in options.tokens]
        self.health = Health(notifier, self.metrics.gateway_state, lambda: self.options.accept_timeout)
        self._metrics_probe: Probe[tuple[bytes, str]] = Probe("metrics")
        #: set by the server: true once shutdown began (waiting requests answer at once)
        self.stopping: Callable[[], bool] = lambda: False
        self._routes: dict[tuple[str, str], Callable[[Scope, bytes], Awaitable[tuple[int, Any]]]] = {
            ("POST", "/v1/alerts"): self._alerts,
            ("POST", "/v1/alertmanager"): self._alertmanager,
            ("POST", "/v1/grafana"): self._grafana,
            ("GET", silences.PATH): partial(silences.list_silences, notifier),
            ("POST", silences.PATH): partial(silences.add_silence, notifier),
            ("DELETE", silences.ONE): partial(silences.expire_silence, notifier),
        }
        #: /v1/heartbeats/{name}, /v1/ack/{code}, and the watchdog of the webhook doors
        self.oncall = OnCallRoutes(
            notifier,
            watchdog_alertname=options.watchdog_alertname,
            watchdog_timeout=options.watchdog_timeout,
            allow_numbers=options.allow_numbers,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"].rstrip("/") or "/"
        if path.startswith(silences.PREFIX):  # one silence: its id is read from scope["path"]
            path = silences.ONE
        started = time.perf_counter()
        body_read = False
        try:
            if path == "/healthz":
                status, payload = await self.health.liveness()
            elif path == "/readyz":
                status, payload = await self.health.readiness()
            else:
                self._authorize(scope)
                if (method, path) == ("GET", "/metrics"):
                    await self._metrics(send)
                    self.metrics.request("/metrics", 200, time.perf_counter() - started)
                    return
                handler = self._routes.get((method, path)) or self.oncall.route(method, path)
                if handler is None:
                    known = any(p == path for _, p in self._routes) or self.oncall.knows(path)
                    raise HTTPError(
                        405 if known else 404,
                        f"{'method not allowed' if known else 'no such route'}: {method} {path}",
                    )
                body = await self._read_body(scope, receive)
                body_read = True
                status, payload = await handler(scope, body)
        except PayloadError as exc:  # a handler's refusal naming the field (the silences')
            status, payload = exc.status, {"error": str(exc), "field": exc.field}
        except HTTPError as exc:
            status, payload = (
                exc.status,
                {"error": exc.message, **({"field": exc.field} if exc.field else {})},
            )
            headers = list(exc.headers)
            if exc.status == 413 or (not body_read and _declares_body(scope)):
                # the rest of the body is not read: the connection ends with this answer
                headers.append(("connection", "close"))
            await _respond(send, status, _json(payload), "application/json", headers)
            self.metrics.request(path, status, time.perf_counter() - started)
            return
        except Exception as exc:  # never a traceback to the client; one line in our log
            _log.error("relay request failed", path=path, error=f"{type(exc).__name__}: {exc}")
            status, payload = 500, {"error": "internal error; see the relay's log"}
        await _respond(send, status, _json(payload), "application/json")
        self.metrics.request(path, status, time.perf_counter() - started)

    # -- security and input ---------------------------------------------------------------
    def _authorize(self, scope: Scope) -> None:
        values = [v for n, v in scope.get("headers", ()) if n.lower() == b"authorization"]
        if len(values) > 1:  # which one counts would be up to whoever reads them: none does
            raise HTTPError(400, f"{len(values)} Authorization headers: send exactly one")
        given = b""
        if values:
            scheme, _, credentials = values[0].partition(b" ")
            if scheme.lower() == b"bearer":
                given = credentials.strip()
        matched = False
        for token in self._tokens:  # every token compared, in constant time each
            matched |= hmac.compare_digest(given, token)
        if not matched:
            raise HTTPError(
                401,
                "a valid 'Authorization: Bearer <token>' header is required",
                headers=[("www-authenticate", "Bearer")],
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.options.max_body
        for name, value in scope.get("headers", ()):
            if name.lower() == b"content-length" and value.isdigit() and int(value) > limit:
                raise HTTPError(413, f"body too large: at most {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "the client went away before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"body too large: at most {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    @staticmethod
    def _parse(parse: Callable[[object], list[AlertSpec]], body: bytes) -> list[AlertSpec]:
        try:
            return parse(decode_body(body))
        except PayloadError as exc:
            raise HTTPError(exc.status, str(exc), field=exc.field) from None

    # -- routes -----------------------------------------------------------------------
    async def _alerts(self, scope: Scope, body: bytes) -> tuple[int, Any]:
        wait = _wait_seconds(scope)
        specs = self._parse(parse_alerts, body)
        for index, spec in enumerate(specs):
            bad = self._unknown_groups(spec)
            if bad:
                where = "groups" if len(specs) == 1 else f"[{index}].groups"
                raise HTTPError(422, f"{where}: {self._why(bad[0])}", field=where)
        return await self._accept(specs, "api", wait)

    async def _alertmanager(self, scope: Scope, body: bytes) -> tuple[int, Any]:
        specs = self._parse(lambda data: parse_alertmanager(data, options=self.options.webhook), body)
        specs, pings = await self.oncall.watchdog(specs, "alertmanager")
        return _pinged(await self._accept(self._routable(specs, "alertmanager"), "alertmanager", 0.0), pings)

    async def _grafana(self, scope: Scope, body: bytes) -> tuple[int, Any]:
        specs = self._parse(lambda data: parse_grafana(data, options=self.options.webhook), body)
        specs, pings = await self.oncall.watchdog(specs, "grafana")
        return _pinged(await self._accept(self._routable(specs, "grafana"), "grafana", 0.0), pings)

    # -- recipients a producer may name -----------------------------------------------------
    def _unknown_groups(self, spec: AlertSpec) -> list[str]:
        if spec.groups is None:
            return []
        known = self.notifier.router.groups
        allow_numbers = self.options.allow_numbers
        return [g for g in spec.groups if g not in known and not (allow_numbers and is_valid_msisdn(g))]

    def _why(self, name: str) -> str:
        known = ", ".join(sorted(self.notifier.router.groups)) or "none"
        if is_valid_msisdn(name):
            return (
                f"{name!r} is a phone number; this relay takes only its groups ({known}); see allow_numbers"
            )
        return f"{name!r} is not a group of this relay (groups: {known})"

    def _routable(self, specs: list[AlertSpec], door: str) -> list[AlertSpec]:
        """Webhook alerts naming groups this relay lacks are routed by its rules instead.

        Refusing them would lose the page for good (Alertmanager does not retry a 4xx);
        the mismatch is logged and counted instead.
        """
        routable = []
        for spec in specs:
            bad = self._unknown_groups(spec)
            if bad:
                self.metrics.misrouted(door, len(bad))
                _log.warning(
                    "groups label names groups this relay lacks; the routes decide instead",
                    door=door,
                    unknown=",".join(bad[:5]),
                )
                kept = tuple(g for g in spec.groups or () if g not in bad) or None
                spec = dataclasses.replace(spec, groups=kept)
            routable.append(spec)
        return routable

    async def _accept(self, specs: list[AlertSpec], door: str, wait: float) -> tuple[int, Any]:
        tickets: list[Ticket] = []
        for spec in specs:
            try:
                ticket = self.notifier.submit(
                    spec.text,
                    severity=spec.severity,
                    key=spec.key,
                    groups=spec.groups,
                    source=spec.source,
                    tags=spec.tags,
                    host="",  # the relay's own host name tells a phone nothing: the source does
                    lifecycle=spec.lifecycle,
                    resolved=spec.resolved,
                    labels=dict(spec.labels),
                )
            except ValueError as exc:  # an unknown group or a bad number, named by the router
                ticket = Ticket.rejected(str(exc))
            tickets.append(ticket)
        self.metrics.received(door, len(tickets))
        if not await _all_done(tickets, self.options.accept_timeout):
            raise HTTPError(
                503, "the alerts were not accepted in time; retry", headers=[("retry-after", "1")]
            )
        results = [_ticket_json(t) for t in tickets]
        if tickets and all(t.status is Outcome.DROPPED for t in tickets):
            raise HTTPError(503, "the relay's queue is full; retry", headers=[("retry-after", "1")])
        accepted = sum(t.status is not Outcome.DROPPED for t in tickets)
        if wait <= 0:
            return 202, {"accepted": accepted, "alerts": results}
        outcomes = await self._wait_for_delivery([i for t in tickets for i in t.csms_ids], wait)
        for result, ticket in zip(results, tickets, strict=True):
            result["sms"] = {i: outcomes[i] for i in ticket.csms_ids}
        summary = {str(state): sum(1 for o in outcomes.values() if o == state) for state in SmsState}
        error = self.notifier.dispatcher.last_error
        return 200, {
            "accepted": accepted,
            "alerts": results,
            "sms": summary,
            "auth_failed": self.notifier.dispatcher.auth_failed.is_set(),
            **({"last_error": str(error)} if error is not None and summary["pending"] else {}),
        }

    async def _wait_for_delivery(self, csms_ids: list[str], wait: float) -> dict[str, str]:
        # shutting down (``stopping``): answer what is known, the SMS stay stored
        outcomes, _end = await await_sms(self.notifier, csms_ids, time.monotonic() + wait, stop=self.stopping)
        return outcomes

    async def _metrics(self, send: Send) -> None:
        try:
            body, content_type = await self._metrics_probe.run(self.metrics.render, METRICS_TIMEOUT)
        except TimeoutError:
            raise HTTPError(
                503, f"the store did not answer within {METRICS_TIMEOUT:g} s; no metrics this time"
            ) from None
        await _respond(send, 200, body, content_type)


def _pinged(answer: tuple[int, Any], pings: int) -> tuple[int, Any]:
    """A webhook's answer, saying how many of its alerts were the watchdog's pings."""
    status, payload = answer
    if pings:
        payload["watchdog"] = pings
    return status, payload


def _wait_seconds(scope: Scope) -> float:
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    if "wait" not in query:
        return 0.0
    try:
        wait = float(query["wait"])
    except ValueError:
        raise HTTPError(
            422, f"wait={query['wait'][:20]!r}: must be a number of seconds", field="wait"
        ) from None
    if not 0 <= wait <= MAX_WAIT:
        raise HTTPError(422, f"wait={wait:g}: must be between 0 and {MAX_WAIT:g} seconds", field="wait")
    return wait


def _ticket_json(ticket: Ticket) -> dict[str, Any]:
    result: dict[str, Any] = {"status": ticket.status}  # an Outcome: its word in JSON
    if ticket.csms_ids:
        result["csms_ids"] = ticket.csms_ids
    if ticket.error:
        result["error"] = ticket.error
    return result


async def _all_done(tickets: list[Ticket], timeout: float) -> bool:
    """Wait for every ticket without blocking the event loop (the intake thread calls back)."""
    pending = [t for t in tickets if not t.done]
    if not pending:
        return True
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    remaining = [len(pending)]

    def one_done(_: Ticket) -> None:
        def count() -> None:
            remaining[0] -= 1
            if remaining[0] == 0 and not done.done():
                done.set_result(True)

        loop.call_soon_threadsafe(count)

    for ticket in pending:
        ticket.add_done_callback(one_done)
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        return False
    return True


def _declares_body(scope: Scope) -> bool:
    """Whether the request says a body follows (Content-Length above 0, or chunked)."""
    for name, value in scope.get("headers", ()):
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


async def _respond(
    send: Send, status: int, body: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()
) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
