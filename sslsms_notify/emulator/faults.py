"""Scripted faults for the emulator: what goes wrong, for how many requests or how long."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

FaultKind = Literal["api_code", "http_error", "drop", "timeout"]

DEFAULT_ERROR_PAGE = (
    "<html><head><title>{status} Service Unavailable</title></head>"
    "<body><h1>{status}</h1><p>nginx</p></body></html>"
)


@dataclass(slots=True)
class Fault:
    """One kind of failure, applied to the next ``count`` requests or until ``until``."""

    kind: FaultKind
    count: int | None = 1
    until: float | None = None
    code: int = 5000
    http_status: int = 503
    body: str | None = None
    #: for "drop" and "timeout": after the gateway processed (and accepted) the request
    after_processing: bool = False
    #: for "timeout": how long the server holds the connection before dropping it
    hold: float = 30.0

    def active(self, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.count is None or self.count > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "until": self.until,
            "code": self.code,
            "http_status": self.http_status,
            "after_processing": self.after_processing,
            "hold": self.hold,
        }


class FaultPlan:
    """Thread-safe queue of faults; the first active one applies to each request."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        #: seconds added to every answer
        self.latency = 0.0

    def add(self, fault: Fault) -> Fault:
        if fault.kind not in ("api_code", "http_error", "drop", "timeout"):
            raise ValueError(f"fault kind {fault.kind!r} is not one of api_code, http_error, drop, timeout")
        if fault.count is not None and fault.count < 1:
            raise ValueError(f"fault count must be at least 1, not {fault.count}")
        with self._lock:
            self._faults.append(fault)
        return fault

    def api_code(self, code: int, count: int = 1) -> Fault:
        """Answer the next ``count`` requests with API status ``code``."""
        return self.add(Fault("api_code", count=count, code=code))

    def http_error(self, status: int = 503, count: int = 1, body: str | None = None) -> Fault:
        """Answer with an HTTP error and an HTML page, as a proxy in front of the gateway would."""
        return self.add(Fault("http_error", count=count, http_status=status, body=body))

    def drop(self, count: int = 1, *, after_processing: bool = False) -> Fault:
        """Close the connection without an answer (optionally after accepting the SMS)."""
        return self.add(Fault("drop", count=count, after_processing=after_processing))

    def timeout(self, count: int = 1, hold: float = 30.0, *, after_processing: bool = False) -> Fault:
        """Never answer (the client's timeout fires); optionally after accepting the SMS."""
        return self.add(Fault("timeout", count=count, hold=hold, after_processing=after_processing))

    def outage(
        self,
        seconds: float,
        *,
        mode: Literal["http_error", "drop", "timeout"] = "http_error",
        hold: float = 30.0,
    ) -> Fault:
        """Every request fails for ``seconds`` from now (``timeout``: hangs for ``hold`` seconds)."""
        return self.add(Fault(mode, count=None, until=self._clock() + seconds, hold=hold))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self.latency = 0.0

    def take(self) -> Fault | None:
        """The fault for this request, counting it down."""
        now = self._clock()
        with self._lock:
            self._faults = [f for f in self._faults if f.active(now)]
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.count is not None:
                fault.count -= 1
            return fault

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._clock()
        with self._lock:
            return [f.to_dict() for f in self._faults if f.active(now)]

    def from_dict(self, spec: dict[str, Any]) -> Fault:
        """Add a fault described over HTTP: ``{"kind": "api_code", "code": 4031, "count": 2}``."""
        spec = dict(spec)
        if "latency" in spec:
            self.latency = float(spec.pop("latency"))
            if not spec:
                return Fault("api_code", count=0)
        seconds = spec.pop("seconds", None)
        kind = spec.pop("kind", None)
        if kind is None:
            raise ValueError("fault needs a 'kind': api_code, http_error, drop or timeout")
        allowed = {"count", "code", "http_status", "body", "after_processing", "hold"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        fault = Fault(kind, **spec)
        if seconds is not None:
            fault.count, fault.until = None, self._clock() + float(seconds)
        return self.add(fault)
