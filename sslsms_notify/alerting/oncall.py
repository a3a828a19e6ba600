"""Someone is always reached: the timers of heartbeats and escalations, and their calls.

- :func:`sweep_oncall`: heartbeats past their deadline page ``[MISSED]``
  (:mod:`.heartbeats`), escalations whose time came page ``[ESCALATED 15m] ...``
  (:mod:`.escalation`); each in the transaction that updates its record, so with several
  relays on one store each event pages once. The timers run it with the other sweeps.
- :class:`OnCall`: what :class:`~sslsms_notify.Notifier` answers for them: ping a
  heartbeat, list or forget heartbeats, acknowledge a code, resolve a key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..stores.base import Store, Tx
from ..stores.records import Heartbeat
from .alert import Alert, Severity
from .decisions import IdBook, Policy, Report, deliver
from .escalation import AckResult, acknowledge, code_rule, due_escalations, key_identity, normalize_code
from .escalation import resolve_escalation as _resolve
from .failover import forget_handoffs
from .formatting import format_escalated
from .heartbeats import EVERY, GRACE, PingResult, check_name, forget, listed, ping, sweep_heartbeats
from .routing import Router
from .stats import Stats

#: what a heartbeat is, as routes see it: ``[[routes]]`` may send heartbeats elsewhere
HEARTBEAT_SOURCE = "heartbeat"


def sweep_oncall(tx: Tx, policy: Policy, ids: IdBook, limit: int = 1000) -> Report:
    """Heartbeats overdue and escalations due, in the timers' transaction (and handoffs to
    the second gateway account past their memory, forgotten)."""
    report = Report()
    forget_handoffs(tx, limit)
    sweep_heartbeats(tx, policy, ids, report, limit)
    for escalation in due_escalations(tx, limit):
        text = format_escalated(escalation.text, escalation.after, max_segments=policy.max_segments)
        deliver(tx, text, escalation.numbers, policy, ids, report, ("escalated", escalation.code))
        report.escalated += 1
    return report


class OnCall:
    """Heartbeats, acknowledgements and resolves for one notifier (each one store transaction).

    Args:
        store, router, policy, stats: the notifier's parts.
        count: adds a transaction's :class:`~.decisions.Report` to the counters.
        wake_dispatch: called when a transaction put SMS in the outbox, or a heartbeat
            needs the timers (it starts them if they wait for a first alert).
        sync: waits until what was queued before is in the store (a resolve must come
            after the alert it resolves).
    """

    def __init__(
        self,
        *,
        store: Store,
        router: Router,
        policy: Policy,
        stats: Stats,
        count: Callable[[Report], None],
        wake_dispatch: Callable[[], None],
        sync: Callable[[float | None], bool],
    ) -> None:
        self.store, self.router, self.policy, self.stats = store, router, policy, stats
        self.count, self.wake_dispatch, self.sync = count, wake_dispatch, sync

    # -- heartbeats -----------------------------------------------------------------------
    def heartbeat(
        self,
        name: str,
        *,
        every: float | str | None = None,
        grace: float | str | None = None,
        groups: Iterable[str] | None = None,
        kind: str = "",
    ) -> PingResult:
        """:meth:`Notifier.heartbeat <sslsms_notify.Notifier.heartbeat>`."""
        check_name(name)
        every_s = None if every is None else float(EVERY.check("every", every, text=True))
        grace_s = None if grace is None else float(GRACE.check("grace", grace, text=True))
        chosen = None
        if groups is not None:
            chosen = tuple(dict.fromkeys(groups))
            if not chosen:
                raise ValueError("groups: names no group (leave it out to let the routes decide)")
            self.router.check_names(chosen, "groups")
        probe = Alert(
            text="-", severity=Severity.CRITICAL, source=HEARTBEAT_SOURCE, tags=frozenset({HEARTBEAT_SOURCE})
        )
        default = self.router.group_names(probe)
        ids = IdBook()
        reports: list[Report] = []

        def record(tx: Tx) -> PingResult:
            report = Report()
            reports[:] = [report]  # a rerun starts its report again
            return ping(
                tx,
                name,
                every=every_s,
                grace=grace_s,
                groups=chosen,
                default_groups=default,
                numbers_of=self._numbers,
                kind=kind,
                policy=self.policy,
                ids=ids,
                report=report,
            )

        result = self.store.transact(record)
        report = reports[0]
        self.count(report)
        self.wake_dispatch()  # also starts the timers, if they wait for a first alert
        return result

    def _numbers(self, groups: tuple[str, ...]) -> tuple[str, ...]:
        """The phones of ``groups`` this notifier knows (a name it lacks is skipped)."""
        phones: dict[str, None] = {}
        for group in groups:
            try:
                phones.update(dict.fromkeys(self.router.numbers(group)))
            except ValueError:  # a group of another process's configuration
                continue
        return tuple(phones)

    def heartbeats(self) -> list[Heartbeat]:
        """:meth:`Notifier.heartbeats <sslsms_notify.Notifier.heartbeats>`."""
        return self.store.transact(listed)

    def forget(self, name: str) -> bool:
        """:meth:`Notifier.forget_heartbeat <sslsms_notify.Notifier.forget_heartbeat>`."""
        check_name(name)
        return self.store.transact(lambda tx: forget(tx, name))

    # -- escalations ------------------------------------------------------------------------
    def ack(self, code: str, *, client: str = "library") -> AckResult:
        """:meth:`Notifier.ack <sslsms_notify.Notifier.ack>`."""
        normalized = normalize_code(code) if isinstance(code, str) else None
        if normalized is None:
            self.stats.add(ack_refused=1)
            raise ValueError(f"code={str(code)[:20]!r}: {code_rule()}")
        result = self.store.transact(lambda tx: acknowledge(tx, normalized, client))
        if result.status == "acked":
            self.stats.add(acked=1)
        elif not result.ok:
            self.stats.add(ack_refused=1)
        return result

    def resolve(self, key: str, timeout: float | None = 10.0) -> bool:
        """:meth:`Notifier.resolve <sslsms_notify.Notifier.resolve>`."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"key={key!r}: must be the non-empty key the alert was raised with")
        self.sync(timeout)  # the alert, if it is still queued, goes first
        return self.store.transact(lambda tx: _resolve(tx, key_identity(key)))
