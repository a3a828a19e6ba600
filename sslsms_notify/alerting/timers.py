"""The pipeline's timers and housekeeping, run between intake rounds.

- timers: windows that end (a "+N more" summary), digests whose phone's allowance
  is back, ``group_wait`` buffers whose wait is over, webhook lifecycles to forget,
  heartbeats overdue and escalations due: every due one swept in one store
  transaction (:func:`sweep`);
- leases: SMS this process has in flight stay its own while it lives;
- housekeeping, once a second: drops said in the log, the outbox kept within
  ``max_pending`` and ``dead_retention``, the store's own upkeep (a Redis spool moved
  back, a lost Redis noticed, a deleted SQLite file reopened), the leases this
  process stands for taken or renewed (see :mod:`.leases`), and the fallback
  channel told when the SMS path changed state (:mod:`.fallback`).

Any process that runs the pipeline's threads runs these, on whatever store it shares:
a relay with no producer of its own sends every producer's summaries on time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import partial

from .._log import get_logger
from ..stores.base import Store, Tx
from .decisions import IdBook, Policy, Report, sweep_all
from .dispatch import Dispatcher
from .fallback import Fallback
from .intake import Intake
from .leases import Campaign, hold, process_name, release
from .oncall import sweep_oncall

_log = get_logger("sslsms_notify.notifier")

#: how often the timers look at the store while work keeps coming
TIMER_INTERVAL = 0.1
#: windows, digests or groups one sweep transaction takes: a few milliseconds at most
SWEEP_LIMIT = 250
#: the longest the intake thread sleeps: other processes sharing the store add windows too
MAX_IDLE = 0.5
#: how often housekeeping runs
HOUSEKEEPING_INTERVAL = 1.0


def sweep(tx: Tx, policy: Policy, ids: IdBook, limit: int) -> Report:
    """Every timer due, in one transaction: the pipeline's (:func:`~.decisions.sweep_all`),
    then heartbeats and escalations (:func:`~.oncall.sweep_oncall`)."""
    report = sweep_all(tx, policy, ids, limit)
    report.add(sweep_oncall(tx, policy, ids, limit))
    return report


class Timers:
    def __init__(
        self,
        *,
        store: Store,
        policy: Policy,
        intake: Intake,
        dispatcher: Dispatcher,
        max_pending: int,
        dead_retention: float,
        wake_dispatch: Callable[[], None],
    ) -> None:
        self.store, self.policy, self.intake, self.dispatcher = store, policy, intake, dispatcher
        self.max_pending = max_pending
        self.dead_retention = dead_retention
        self.wake_dispatch = wake_dispatch
        #: the fallback channel, told from housekeeping when the SMS path changes state
        self.fallback: Fallback | None = None
        self.reset()

    def reset(self) -> None:
        """Per-process state (a forked child starts its own clocks)."""
        #: monotonic time of the next look at the store's timers (0: at once)
        self.due = 0.0
        self._renew_due = 0.0
        self._housekeeping_due = 0.0
        #: this process, as a lease holder; the leases it stands for (none held after a fork)
        self.holder = process_name()
        self.campaigns: dict[str, Campaign] = {
            name: Campaign(name, c.ttl) for name, c in getattr(self, "campaigns", {}).items()
        }

    def stand(self, name: str, ttl: float | None = None) -> Campaign:
        """Stand for lease ``name`` (see :mod:`.leases`): tried at once, then once a second.

        Returns the campaign, whose ``held`` says whether this process held it at the last try.
        """
        campaign = self.campaigns.get(name)
        if campaign is None:
            campaign = self.campaigns[name] = Campaign(name) if ttl is None else Campaign(name, ttl)
            self._campaign(campaign)
        return campaign

    def resign(self) -> None:
        """Give up the leases held (a process closing): another process takes them over at once."""
        held = [c.name for c in self.campaigns.values() if c.held]
        for campaign in self.campaigns.values():
            campaign.held = False
        if held:
            with contextlib.suppress(Exception):
                self.store.transact(lambda tx: release(tx, held, self.holder))

    def _campaign(self, campaign: Campaign) -> None:
        try:
            campaign.held = self.store.transact(lambda tx: hold(tx, campaign.name, self.holder, campaign.ttl))
        except Exception:  # the store fails: nobody can tell we hold it
            campaign.held = False

    def run(self, *, force: bool = False) -> bool:
        """Renew leases; sweep whatever is due; housekeeping once a second. True if it sent anything."""
        now = time.monotonic()
        worked = False
        if now >= self._renew_due:
            self._renew_due = now + self.dispatcher.policy.lease / 3
            in_flight = list(self.dispatcher.in_flight)
            if in_flight:
                self.store.outbox_renew(in_flight, self.dispatcher.policy.lease)
        if not force and now < self.due:
            return False
        self.due = now + TIMER_INTERVAL
        for store in self.store.timer_stores():
            next_due = store.next_due()
            if next_due is None or next_due > store.now():
                continue
            # one IdBook for every rerun of the transaction: the same SMS, the same ids
            report = store.transact(partial(sweep, policy=self.policy, ids=IdBook(), limit=SWEEP_LIMIT))
            self.intake.count(report)
            worked |= bool(report.queued or report.windows_closed or report.groups)
            if report.windows_closed >= SWEEP_LIMIT:
                self.due = 0.0  # more are due: the next round sweeps on at once
            if report.queued:
                self.wake_dispatch()
        if force or now >= self._housekeeping_due:
            self._housekeeping_due = now + HOUSEKEEPING_INTERVAL
            self._housekeeping()
        return worked

    def idle_wait(self) -> float:
        """How long the intake thread may sleep: until a timer, a lease renewal or a rotation is due."""
        waits = [MAX_IDLE, self._renew_due - time.monotonic()]
        if self.intake.coalescer.entries:
            waits.append(self.intake.coalescer.period)
        with contextlib.suppress(Exception):
            next_due = self.store.next_due()
            if next_due is not None:
                until = next_due - self.store.now()
                waits.append(until)
                # waking for it, the timers look at once, not at their next regular check
                self.due = min(self.due, time.monotonic() + until)
        return min(max(0.005, w) for w in waits)

    def _housekeeping(self) -> None:
        self.intake.log_all_drops()
        counts = self.store.outbox_counts()
        if counts.pending > self.max_pending:
            dropped = self.store.outbox_trim(self.max_pending, "dropped: outbox full")
            if dropped:
                self.intake.stats.add(outbox_dropped=len(dropped))
                if self.fallback is not None:
                    self.fallback.watch.dead_letter(self.store.now(), "dropped: outbox full")
                _log.warning(
                    "outbox full; oldest pending SMS dropped",
                    dropped=len(dropped),
                    max_pending=self.max_pending,
                )
        if counts.dead:
            self.store.outbox_expire_dead(self.store.now() - self.dead_retention)
        try:
            if self.store.maintain():  # the store's own upkeep made SMS due (a spool moved back, say)
                self.wake_dispatch()
        except Exception as exc:  # said (once per kind), and the leases and the fallback still run
            self.intake.errors.error("store upkeep failed", exc)
        for campaign in self.campaigns.values():
            self._campaign(campaign)
        if self.fallback is not None:
            try:
                self.fallback.tick()
            except Exception as exc:  # the store failing is said elsewhere; this must not stop the rest
                _log.debug("fallback channel: no decision this round", error=f"{type(exc).__name__}: {exc}")
