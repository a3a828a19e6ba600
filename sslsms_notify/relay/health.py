"""The relay's two health routes: ``/healthz`` (liveness) and ``/readyz`` (readiness).

Both answer within :data:`HEALTH_TIMEOUT`, whatever the store does: the store is read
in a thread of its own (:class:`Probe`), one check at a time, and a check still under
way is awaited again by the next request rather than started twice. Both answer
``503`` only when nothing can take an alert:

- ``/healthz``: whether this process can take alerts, into its store or the store's
  spool; ``status`` ``ok``, ``degraded`` (the gateway fails, the store spools or is
  slow) or ``down``; with the backlog counts. For liveness probes: a restart would not
  help a Redis outage, and would lose a spool on a volume that does not persist.
- ``/readyz``: where alerts go now; ``state`` ``ok`` (where they should: the store
  configured), ``spooling`` (Redis is away; a spool on this host keeps them and moves
  them back) or ``down``. For readiness probes and load balancers.

A store that has not answered for as long as an intake waits for it
(``accept_timeout``) is ``down``: alerts are being refused with ``503`` by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..alerting.notifier import Notifier
from ..stores.base import StoreHealth

T = TypeVar("T")
#: ``/healthz`` and ``/readyz`` answer within this many seconds, whatever the store does
HEALTH_TIMEOUT = 1.0
#: ``/readyz``'s ``state`` for each store health: a memory store is volatile by design, so ``ok``
READINESS = {"durable": "ok", "volatile": "ok", "spooling": "spooling", "down": "down"}


class Health:
    """Liveness and readiness of a relay's pipeline.

    ``gateway_state()``: ``ok``, ``auth_failed``, ``unreachable`` or ``unknown``;
    ``accept_timeout()``: how long an intake waits for the store (read at each use).
    """

    def __init__(
        self, notifier: Notifier, gateway_state: Callable[[], str], accept_timeout: Callable[[], float]
    ) -> None:
        self.notifier = notifier
        self._gateway_state = gateway_state
        self._accept_timeout = accept_timeout
        self._probe: Probe[tuple[StoreHealth, dict[str, int | None]]] = Probe("health")

    async def liveness(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: the store's state and the backlog, at most :data:`HEALTH_TIMEOUT` s.

        ``200`` while alerts can be taken, into the store or its spool; ``503`` only when
        nothing can take them. A store that has not answered within the timeout is
        reported as such (``"store": "no answer within 1 s"``, counts ``null``) with
        ``degraded`` and 200, for as long as an intake would still wait for it; past
        that, alerts are being refused with 503, so the relay is ``down`` and answers 503.
        """
        gateway = self._gateway_state()
        try:
            health, counts = await self._probe.run(self._read, HEALTH_TIMEOUT)
        except TimeoutError:
            waited = self._probe.running_for()
            down = waited >= self._accept_timeout()
            silence = f"for {waited:.0f} s" if down else f"within {HEALTH_TIMEOUT:g} s"
            return (503 if down else 200), {
                "status": "down" if down else "degraded",
                "store": f"no answer {silence}",
                "gateway": gateway,
                "queue": None,
                "pending": None,
                "dead": None,
            }
        if health.state == "down":
            status, store = "down", health.detail or "down"
        elif health.state == "spooling":
            status, store = "degraded", f"spooling: {health.detail}"
        else:
            status, store = ("ok" if gateway in ("ok", "unknown") else "degraded"), "ok"
        body = {"status": status, "store": store, "gateway": gateway, **counts}
        return (503 if status == "down" else 200), body

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        """``/readyz``: ``{"state": "ok" | "spooling" | "down", "store": ..., "detail": ...}``;
        ``503`` only when ``down``. At most :data:`HEALTH_TIMEOUT` s, like :meth:`liveness`."""
        try:
            health, _ = await self._probe.run(self._read, HEALTH_TIMEOUT)
        except TimeoutError:
            waited = self._probe.running_for()
            if waited >= self._accept_timeout():
                health = StoreHealth("down", f"the store has not answered for {waited:.0f} s")
            else:  # what the store last saw, without asking it (no I/O)
                last = self.notifier.store.health()
                slow = f"no answer within {HEALTH_TIMEOUT:g} s"
                health = StoreHealth(last.state, f"{last.detail}; {slow}" if last.detail else slow)
        state = READINESS[health.state]
        body = {"state": state, "store": health.state, "detail": health.detail}
        return (503 if state == "down" else 200), body

    def _read(self) -> tuple[StoreHealth, dict[str, int | None]]:
        """Where writes go (the store checked, then its own word) and the backlog counts:
        every store read of the health routes, in the probe's thread."""
        store = self.notifier.store
        try:
            store.check()  # a Redis store that cannot reach its server turns to its spool here
        except Exception as exc:
            error: str | None = str(exc) or type(exc).__name__
        else:
            error = None
        health = store.health()
        if error is not None and health.state in ("durable", "volatile"):
            health = StoreHealth("down", error)
        if self.notifier.closed:
            health = StoreHealth("down", "the pipeline is closed")
        stats = self.notifier.stats()
        return health, {"queue": stats["queued"], "pending": stats.get("pending"), "dead": stats.get("dead")}


class Probe(Generic[T]):
    """A blocking call run in its own daemon thread, one at a time, awaited with a timeout.

    ``asyncio.wait_for(asyncio.to_thread(...))`` gives up waiting but not the thread: a
    store that hangs would take a worker of the default executor on every health check
    until none is left. Here a call still running is awaited again by the next caller
    instead of starting another, so a stuck store holds one thread, not one per check.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._running: asyncio.Future[T] | None = None
        self._started = 0.0

    def running_for(self) -> float:
        """Seconds the call under way has been running (0 if none is)."""
        if self._running is None or self._running.done():
            return 0.0
        return time.monotonic() - self._started

    async def run(self, call: Callable[[], T], timeout: float) -> T:
        """``call()``'s result or exception; ``TimeoutError`` if it has not ended within ``timeout``."""
        if self._running is None or self._running.done():
            self._running, self._started = self._start(call), time.monotonic()
        future = self._running
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if not done:
            raise TimeoutError(f"{self.name}: no answer within {timeout:g} s")
        return future.result()

    def _start(self, call: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        # an outcome nobody waits for any more (every waiter timed out) is not an error to log
        future.add_done_callback(lambda f: f.cancelled() or f.exception())

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def work() -> None:
            try:
                result, error = call(), None
            except Exception as exc:
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=work, name=f"sslsms-relay-{self.name}", daemon=True).start()
        return future
