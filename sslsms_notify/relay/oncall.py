"""The relay's on-call routes: heartbeats, acknowledgements, and the monitoring watchdog.

Routes (bearer token required, as for every route but ``/healthz``):

    POST /v1/heartbeats/{name}   a ping; body (optional) {"every": "24h", "grace": "1h",
                                 "groups": ["oncall"]}; a new heartbeat needs "every"
    GET  /v1/heartbeats          every heartbeat on the store, with its last ping
    POST /v1/ack/{code}          acknowledge the alert whose SMS ended with " ack:{code}"

**The watchdog.** Alertmanager's ``Watchdog`` alert (``[relay] watchdog_alertname``) fires
for as long as Prometheus and Alertmanager work, re-sent at its route's
``repeat_interval``. The relay takes each one as a ping of the heartbeat
``alertmanager`` (``grafana`` through the Grafana door) with ``every`` =
``[relay] watchdog_timeout`` and no grace: it never pages by itself, and when it stops
coming the timers page ``[MISSED] monitoring: Alertmanager silent since 02:00`` once.

**Acknowledgements** are limited per client: the peer address of the connection
(behind a reverse proxy every client is the proxy, so the limit holds for all of them
together), shared by every relay on the store (see
:mod:`sslsms_notify.alerting.escalation`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..alerting.escalation import AckResult, code_rule
from ..alerting.heartbeats import NAME_RULE, PingResult, describe_heartbeat
from ..alerting.notifier import Notifier
from ..gateway.msisdn import is_valid_msisdn
from .errors import HTTPError
from .payloads import AlertSpec, PayloadError, decode_body

Scope = dict[str, Any]
Handler = Callable[[Scope, bytes], Awaitable[tuple[int, Any]]]
HEARTBEATS = "/v1/heartbeats"
ACK = "/v1/ack"
_PING_FIELDS = ("every", "grace", "groups")
#: the heartbeat each webhook door's watchdog pings
WATCHDOG_HEARTBEATS = {"alertmanager": "alertmanager", "grafana": "grafana"}


class OnCallRoutes:
    """Heartbeat and acknowledgement routes, and the watchdog filter for webhook doors."""

    def __init__(
        self,
        notifier: Notifier,
        *,
        watchdog_alertname: str,
        watchdog_timeout: float,
        allow_numbers: bool,
    ) -> None:
        self.notifier = notifier
        self.watchdog_alertname = watchdog_alertname
        self.watchdog_timeout = watchdog_timeout
        self.allow_numbers = allow_numbers

    def route(self, method: str, path: str) -> Handler | None:
        """The handler of ``method path``, or None (the path itself is known: :meth:`knows`)."""
        if method == "GET" and path == HEARTBEATS:
            return self._list
        if method == "POST" and path.startswith(HEARTBEATS + "/"):
            name = path[len(HEARTBEATS) + 1 :]
            return lambda scope, body: self._ping(name, scope, body)
        if method == "POST" and path.startswith(ACK + "/"):
            code = path[len(ACK) + 1 :]
            return lambda scope, body: self._ack(code, scope, body)
        return None

    @staticmethod
    def knows(path: str) -> bool:
        """Whether ``path`` is one of these routes (a wrong method then gets 405, not 404)."""
        return path == HEARTBEATS or path.startswith((HEARTBEATS + "/", ACK + "/"))

    # -- heartbeats -------------------------------------------------------------------------
    async def _ping(self, name: str, scope: Scope, body: bytes) -> tuple[int, Any]:
        fields = _object(body)
        options: dict[str, Any] = {}
        for key in ("every", "grace"):
            value = fields.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | float)):
                raise HTTPError(
                    422, f'{key}: must be a duration like "24h" or a number of seconds', field=key
                )
            options[key] = value
        options["groups"] = self._groups(fields.get("groups"))
        try:
            result = await asyncio.to_thread(self.notifier.heartbeat, name, **options)
        except ValueError as exc:
            message = str(exc)
            field = message.partition("=")[0].partition(":")[0].strip() or "body"
            if message.startswith("name="):
                raise HTTPError(
                    422, f"name (the path after {HEARTBEATS}/): {NAME_RULE}", field="name"
                ) from None
            raise HTTPError(422, message, field=field) from None
        return 200, _ping_json(result)

    def _groups(self, value: object) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            names = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            names = [v.strip() for v in value if v.strip()]
        else:
            raise HTTPError(
                422, "groups: must be an array of group names (or one comma-separated string)", field="groups"
            )
        known = self.notifier.router.groups
        for name in names:
            if name not in known and not (self.allow_numbers and is_valid_msisdn(name)):
                groups = ", ".join(sorted(known)) or "none"
                raise HTTPError(
                    422,
                    f"groups: {name[:40]!r} is not a group of this relay (groups: {groups})",
                    field="groups",
                )
        if not names:
            raise HTTPError(
                422, "groups: names no group (leave it out to keep the heartbeat's)", field="groups"
            )
        return tuple(dict.fromkeys(names))

    async def _list(self, scope: Scope, body: bytes) -> tuple[int, Any]:
        beats = await asyncio.to_thread(self.notifier.heartbeats)
        return 200, {"heartbeats": [describe_heartbeat(b) for b in beats]}

    # -- acknowledgements ----------------------------------------------------------------------
    async def _ack(self, code: str, scope: Scope, body: bytes) -> tuple[int, Any]:
        client = scope.get("client") or ("unknown", 0)
        try:
            result: AckResult = await asyncio.to_thread(self.notifier.ack, code, client=f"relay {client[0]}")
        except ValueError:
            raise HTTPError(422, f"code (the path after {ACK}/): {code_rule()}", field="code") from None
        if result.status == "limited":
            wait = max(1, round(result.retry_after))
            raise HTTPError(
                429,
                f"too many wrong codes from this client; try again in {wait} s",
                headers=[("retry-after", str(wait))],
            )
        if result.status == "unknown":
            raise HTTPError(404, "code: no alert waits for this code (a typo, or it expired)", field="code")
        return 200, result.as_dict()

    # -- the watchdog ---------------------------------------------------------------------------
    async def watchdog(self, specs: list[AlertSpec], door: str) -> tuple[list[AlertSpec], int]:
        """The specs without the watchdog alert; each firing one pings the door's heartbeat.

        Returns the specs left and how many pings there were. A resolved watchdog (its
        source stopped sending it) pings nothing: its silence pages when the time comes.
        """
        if not self.watchdog_alertname:
            return specs, 0
        tag = f"alertname={self.watchdog_alertname}"
        watchdogs = [s for s in specs if tag in s.tags]
        if not watchdogs:
            return specs, 0
        firing = [s for s in watchdogs if not s.resolved]
        if firing:
            named = firing[0].groups
            known = tuple(g for g in named or () if g in self.notifier.router.groups) or None
            await asyncio.to_thread(
                self.notifier.heartbeat,
                WATCHDOG_HEARTBEATS[door],
                every=self.watchdog_timeout,
                grace=0.0,
                groups=known,
                kind=WATCHDOG_HEARTBEATS[door],
            )
        return [s for s in specs if tag not in s.tags], len(firing)


def _object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = decode_body(body)
    except PayloadError as exc:
        raise HTTPError(exc.status, str(exc), field=exc.field) from None
    if not isinstance(data, dict):
        raise HTTPError(400, 'body: must be a JSON object like {"every": "24h"}', field="body")
    for key in data:
        if key not in _PING_FIELDS:
            raise HTTPError(
                422,
                f"{str(key)[:40]}: is not a field here (known: every, grace, groups)",
                field=str(key)[:40],
            )
    return data


def _ping_json(result: PingResult) -> dict[str, Any]:
    answer = {"status": result.status, **describe_heartbeat(result.heartbeat)}
    if result.csms_ids:
        answer["csms_ids"] = result.csms_ids
    return answer
