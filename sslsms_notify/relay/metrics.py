"""``/metrics`` for the relay, with the official ``prometheus-client``.

The pipeline already counts everything (``Notifier.stats()``, O(1) on every
store), so a custom collector reads those counters at scrape time instead of
keeping a second set: the two can never disagree. What only the relay sees is
kept here: requests per route and status, alerts received per door, and the
latency of gateway requests (a histogram fed by the dispatcher's hook).

Every family is declared once (:data:`METRICS`): name, type, help, labels, and the
stats key it shows. The collector and the relay's own counters are built from the
declarations, and the documentation's table is rendered from them.

**Sums that hold over relays.** Counters are per process, and so are most gauges. The
store-wide gauges (SMS pending, dead letters, dedup windows: what every relay on the
store would read alike) are exported by one relay only, the holder of the store's
``store-gauges`` lease (:mod:`sslsms_notify.alerting.leases`): ``sum()`` over relays
counts each SMS once, and ``sslsms_store_reporter`` says which relay it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..alerting.notifier import Notifier


@dataclass(frozen=True)
class MetricSpec:
    """One metric family ``/metrics`` exports: declared here, built from this, documented from this."""

    #: the family name; a counter is exported as ``<name>_total``
    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...] = ()
    #: the ``Notifier.stats()`` key it shows (the pipeline's counters and backlog)
    stats_key: str | None = None
    buckets: tuple[float, ...] = ()
    #: what every process on the store reads alike: exported by the lease holder only
    store_wide: bool = False

    @property
    def exported(self) -> str:
        """The name a scrape shows (``sslsms_sms_sent_total``)."""
        return f"{self.name}_total" if self.kind == "counter" else self.name


def _counter(stats_key: str, name: str, doc: str) -> MetricSpec:
    return MetricSpec(name, "counter", doc, stats_key=stats_key)


def _gauge(stats_key: str, name: str, doc: str, *, store_wide: bool = False) -> MetricSpec:
    if store_wide:
        doc += " Store-wide: exported by one relay of those sharing the store (sslsms_store_reporter)."
    return MetricSpec(name, "gauge", doc, stats_key=stats_key, store_wide=store_wide)


#: the lease whose holder exports the store-wide gauges
REPORTER_LEASE = "store-gauges"


#: read from the pipeline at scrape time (``Notifier.stats()``, ``group_stats()``, the dispatcher)
PIPELINE_METRICS: tuple[MetricSpec, ...] = (
    _counter("received", "sslsms_alerts_received", "Alerts handed to the pipeline (repeats included)."),
    _counter("suppressed", "sslsms_alerts_suppressed", "Repeats held back by a dedup window or a lifecycle."),
    _counter(
        "resent",
        "sslsms_alerts_resent",
        "Webhook re-sends of an alert already paged in its lifecycle (no SMS).",
    ),
    _counter("reminders", "sslsms_reminders", "Reminders of webhook alerts still firing (remind_every)."),
    _counter("throttled", "sslsms_alerts_throttled", "SMS held back by a per-phone cap (into a digest)."),
    _counter("silenced", "sslsms_alerts_silenced", "Alerts an active silence held (no SMS)."),
    _counter("quiet_held", "sslsms_alerts_quiet_held", "Alerts a group's quiet hours held (for its digest)."),
    _counter("hold_summaries", "sslsms_hold_summaries", "SMS telling what a silence or quiet hours held."),
    _counter("dropped", "sslsms_alerts_dropped", "Alerts the bounded queue had no room for."),
    _counter("rejected", "sslsms_alerts_rejected", "Alerts refused as bad input."),
    _counter("unrouted", "sslsms_alerts_unrouted", "Alerts no configured route matched (nobody was paged)."),
    _counter("summaries", "sslsms_summaries", "'+N more' summary SMS produced."),
    _counter("digests", "sslsms_digests", "Digest SMS produced."),
    _counter("sent", "sslsms_sms_sent", "SMS the gateway accepted."),
    _counter("failed", "sslsms_sms_failed", "SMS given up on (dead letters)."),
    _counter("requests", "sslsms_gateway_requests", "HTTP requests made to the gateway."),
    _counter(
        "retried", "sslsms_sms_retried", "SMS attempts after the first, and client-side request retries."
    ),
    _counter("evicted", "sslsms_windows_evicted", "Dedup windows closed early to stay within max_windows."),
    _counter(
        "outbox_dropped", "sslsms_outbox_dropped", "Pending SMS made dead letters to stay within max_pending."
    ),
    _counter(
        "escalations",
        "sslsms_escalations",
        "Alerts paged with an ack code (they escalate unless acknowledged).",
    ),
    _counter(
        "escalated", "sslsms_escalated", "Escalation pages: alerts nobody acknowledged or resolved in time."
    ),
    _counter("acked", "sslsms_acks", "Escalations acknowledged through this relay."),
    _counter(
        "ack_refused",
        "sslsms_acks_refused",
        "Acknowledgements refused (no code, unknown, or over the limit).",
    ),
    _counter(
        "heartbeats_missed",
        "sslsms_heartbeats_missed",
        "[MISSED] pages: heartbeats silent past their deadline.",
    ),
    _counter(
        "heartbeats_recovered", "sslsms_heartbeats_recovered", "[RECOVERED] pages: missed heartbeats back."
    ),
    _counter("fallback_told", "sslsms_fallback_told", "Messages told to the fallback channel."),
    _counter("secondary", "sslsms_sms_sent_secondary", "SMS the second gateway account took."),
    _gauge("queued", "sslsms_queue_depth", "Alerts waiting for the intake thread."),
    _gauge("pending", "sslsms_outbox_pending", "SMS in the outbox still to send.", store_wide=True),
    _gauge("dead", "sslsms_outbox_dead", "Dead letters kept in the outbox.", store_wide=True),
    _gauge("windows", "sslsms_dedup_windows", "Open dedup windows.", store_wide=True),
    MetricSpec(
        "sslsms_group_alerts",
        "counter",
        "Alerts that paged a recipient group (first of their window).",
        ("group",),
    ),
    MetricSpec("sslsms_group_suppressed", "counter", "Repeats held back per recipient group.", ("group",)),
    MetricSpec(
        "sslsms_gateway_auth_failed",
        "gauge",
        "1 while the gateway refuses our credentials (sending is paused).",
    ),
)

#: the store as this process sees it (read at scrape time)
STORE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "sslsms_store_reporter",
        "gauge",
        "1 on the one relay that exports the store-wide gauges (pending, dead, windows); 0 on the others.",
    ),
    MetricSpec(
        "sslsms_store_spooling",
        "gauge",
        "1 while this process's writes go to its local spool (Redis unreachable or refusing writes).",
    ),
    MetricSpec(
        "sslsms_store_replica_timeouts",
        "counter",
        "Writes no Redis replica acknowledged within replica_wait (they counted anyway).",
    ),
)

#: what only the relay sees, kept by :class:`RelayMetrics`
RELAY_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("sslsms_relay_requests", "counter", "Relay HTTP requests.", ("route", "code")),
    MetricSpec(
        "sslsms_relay_request_seconds",
        "histogram",
        "Time to answer a relay request (intake: until its alerts are in the store).",
        ("route",),
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    ),
    MetricSpec("sslsms_relay_alerts_received", "counter", "Alerts received per door.", ("door",)),
    MetricSpec(
        "sslsms_relay_unknown_groups",
        "counter",
        "Group names in webhook labels this relay does not know (the routes decided instead).",
        ("door",),
    ),
    MetricSpec(
        "sslsms_gateway_request_seconds",
        "histogram",
        "Latency of gateway requests by kind and outcome.",
        ("kind", "outcome"),
        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    ),
)

#: every metric family of ``/metrics``, in the order a scrape shows them
METRICS: tuple[MetricSpec, ...] = PIPELINE_METRICS + STORE_METRICS + RELAY_METRICS
_BY_NAME = {m.name: m for m in METRICS}


def _family(name: str, value: float | None = None) -> CounterMetricFamily | GaugeMetricFamily:
    spec = _BY_NAME[name]
    family = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    return family(spec.name, spec.help, value=value, labels=list(spec.labels) or None)


class _PipelineCollector(Collector):
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        #: whether this relay exports the store-wide gauges (see the module docstring)
        self.reporter = notifier.timers.stand(REPORTER_LEASE)

    def collect(self) -> Iterator[Metric]:
        stats = self.notifier.stats()
        reporting = self.reporter.held
        for spec in PIPELINE_METRICS:
            if spec.store_wide and not reporting:
                continue
            if spec.stats_key is not None and (spec.kind == "counter" or spec.stats_key in stats):
                yield _family(spec.name, value=stats.get(spec.stats_key, 0))
        alerts = _family("sslsms_group_alerts")
        repeats = _family("sslsms_group_suppressed")
        for group, counts in sorted(self.notifier.group_stats().items()):
            alerts.add_metric([group], counts["alerts"])
            repeats.add_metric([group], counts["suppressed"])
        yield alerts
        yield repeats
        yield _family("sslsms_gateway_auth_failed", value=int(self.notifier.dispatcher.auth_failed.is_set()))
        store = self.notifier.store
        yield _family("sslsms_store_reporter", value=int(reporting))
        yield _family("sslsms_store_spooling", value=int(store.health().state == "spooling"))
        yield _family("sslsms_store_replica_timeouts", value=store.counters().get("replica_timeouts", 0))


def _relay_metric(spec: MetricSpec, registry: CollectorRegistry) -> Any:
    if spec.kind == "histogram":
        return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)
    return Counter(spec.name, spec.help, spec.labels, registry=registry)


class RelayMetrics:
    """One registry per relay (tests and embedders may run several in one process)."""

    def __init__(self, notifier: Notifier) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_PipelineCollector(notifier))
        made = {spec.name: _relay_metric(spec, self.registry) for spec in RELAY_METRICS}
        self._requests = made["sslsms_relay_requests"]
        self._relay_latency = made["sslsms_relay_request_seconds"]
        self._by_door = made["sslsms_relay_alerts_received"]
        self._misrouted = made["sslsms_relay_unknown_groups"]
        self._gateway = made["sslsms_gateway_request_seconds"]
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
        if route.startswith(("/v1/heartbeats/", "/v1/ack/")):  # one series per route, not per name
            route = route.rsplit("/", 1)[0] + (
                "/{name}" if route.startswith("/v1/heartbeats/") else "/{code}"
            )
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


_ROUTES = {
    "/v1/alerts",
    "/v1/alertmanager",
    "/v1/grafana",
    "/v1/heartbeats",
    "/v1/heartbeats/{name}",
    "/v1/ack/{code}",
    "/v1/silences",
    "/v1/silences/{id}",
    "/healthz",
    "/readyz",
    "/metrics",
}
