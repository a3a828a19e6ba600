"""``/metrics`` for the relay, with the official ``prometheus-client``.

The pipeline already counts everything (``Notifier.stats()``, O(1) on every
store), so a custom collector reads those counters at scrape time instead of
keeping a second set: the two can never disagree. What only the relay sees is
kept here: requests per route and status, alerts received per door, and the
latency of gateway requests (a histogram fed by the dispatcher's hook).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..alerting.notifier import Notifier

# stats() key -> (metric name, help), counters
_COUNTERS = {
    "received": ("sslsms_alerts_received", "Alerts handed to the pipeline (repeats included)."),
    "suppressed": ("sslsms_alerts_suppressed", "Repeats held back by a dedup window or a lifecycle."),
    "resent": (
        "sslsms_alerts_resent",
        "Webhook re-sends of an alert already paged in its lifecycle (no SMS).",
    ),
    "reminders": ("sslsms_reminders", "Reminders of webhook alerts still firing (remind_every)."),
    "throttled": ("sslsms_alerts_throttled", "SMS held back by a per-phone cap (into a digest)."),
    "dropped": ("sslsms_alerts_dropped", "Alerts the bounded queue had no room for."),
    "rejected": ("sslsms_alerts_rejected", "Alerts refused as bad input."),
    "unrouted": ("sslsms_alerts_unrouted", "Alerts no configured route matched (nobody was paged)."),
    "summaries": ("sslsms_summaries", "'+N more' summary SMS produced."),
    "digests": ("sslsms_digests", "Digest SMS produced."),
    "sent": ("sslsms_sms_sent", "SMS the gateway accepted."),
    "failed": ("sslsms_sms_failed", "SMS given up on (dead letters)."),
    "requests": ("sslsms_gateway_requests", "HTTP requests made to the gateway."),
    "retried": ("sslsms_sms_retried", "SMS attempts after the first, and client-side request retries."),
    "evicted": ("sslsms_windows_evicted", "Dedup windows closed early to stay within max_windows."),
    "outbox_dropped": ("sslsms_outbox_dropped", "Pending SMS made dead letters to stay within max_pending."),
}
# stats() key -> (metric name, help), gauges
_GAUGES = {
    "queued": ("sslsms_queue_depth", "Alerts waiting for the intake thread."),
    "pending": ("sslsms_outbox_pending", "SMS in the outbox still to send."),
    "dead": ("sslsms_outbox_dead", "Dead letters kept in the outbox."),
    "windows": ("sslsms_dedup_windows", "Open dedup windows."),
}


class _PipelineCollector(Collector):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def collect(self) -> Iterator[Metric]:
        stats = self.notifier.stats()
        for key, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
        for key, (name, doc) in _GAUGES.items():
            if key in stats:
                yield GaugeMetricFamily(name, doc, value=stats[key])
        alerts = CounterMetricFamily(
            "sslsms_group_alerts",
            "Alerts that paged a recipient group (first of their window).",
            labels=["group"],
        )
        repeats = CounterMetricFamily(
            "sslsms_group_suppressed", "Repeats held back per recipient group.", labels=["group"]
        )
        for group, counts in sorted(self.notifier.group_stats().items()):
            alerts.add_metric([group], counts["alerts"])
            repeats.add_metric([group], counts["suppressed"])
        yield alerts
        yield repeats
        yield GaugeMetricFamily(
            "sslsms_gateway_auth_failed",
            "1 while the gateway refuses our credentials (sending is paused).",
            value=int(self.notifier.dispatcher.auth_failed.is_set()),
        )


class RelayMetrics:
    """One registry per relay (tests and embedders may run several in one process)."""

    def __init__(self, notifier: Notifier) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_PipelineCollector(notifier))
        self._requests = Counter(
            "sslsms_relay_requests", "Relay HTTP requests.", ["route", "code"], registry=self.registry
        )
        self._relay_latency = Histogram(
            "sslsms_relay_request_seconds",
            "Time to answer a relay request (intake: until its alerts are in the store).",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self._by_door = Counter(
            "sslsms_relay_alerts_received", "Alerts received per door.", ["door"], registry=self.registry
        )
        self._misrouted = Counter(
            "sslsms_relay_unknown_groups",
            "Group names in webhook labels this relay does not know (the routes decided instead).",
            ["door"],
            registry=self.registry,
        )
        self._gateway = Histogram(
            "sslsms_gateway_request_seconds",
            "Latency of gateway requests by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self._lock = threading.Lock()
        self._last_gateway: tuple[float, str] | None = None
        self._notifier = notifier
        notifier.dispatcher.on_request = self._gateway_request

    def _gateway_request(self, kind: str, seconds: float, outcome: str) -> None:
        self._gateway.labels(kind=kind, outcome=outcome).observe(seconds)
        with self._lock:
            self._last_gateway = (time.monotonic(), outcome)

    def gateway_state(self) -> str:
        """``ok``, ``auth_failed``, ``unreachable`` (last request failed) or ``unknown`` (none yet)."""
        if self._notifier.dispatcher.auth_failed.is_set():
            return "auth_failed"
        with self._lock:
            last = self._last_gateway
        if last is None:
            return "unknown"
        return "ok" if last[1] == "ok" else "unreachable"

    def request(self, route: str, code: int, seconds: float) -> None:
        route = route if route in _ROUTES else "other"
        self._requests.labels(route=route, code=str(code)).inc()
        self._relay_latency.labels(route=route).observe(seconds)

    def received(self, door: str, count: int) -> None:
        self._by_door.labels(door=door).inc(count)

    def misrouted(self, door: str, count: int) -> None:
        self._misrouted.labels(door=door).inc(count)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def __repr__(self) -> str:
        return f"RelayMetrics({self._notifier!r})"


_ROUTES = {"/v1/alerts", "/v1/alertmanager", "/v1/grafana", "/healthz", "/metrics"}
