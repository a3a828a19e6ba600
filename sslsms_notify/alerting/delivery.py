"""Waiting for what became of one alert's SMS: the one home for ``send``, the relay and apprise.

A producer that submitted an alert (:meth:`Notifier.submit
<sslsms_notify.alerting.notifier.Notifier.submit>`) holds a ticket; once the intake
has decided it, the ticket names the SMS the alert became (``csms_ids``). Waiting
for those SMS, and only those, is one loop over one step:

- :func:`wait_for_sms` (blocking) and :func:`await_sms` (``async``: the outbox is
  read in a worker thread, the event loop never blocks) poll
  :meth:`Notifier.outcomes <sslsms_notify.alerting.notifier.Notifier.outcomes>`
  until every SMS is decided, the gateway refuses the credentials, the deadline
  passes or the caller says stop; both share :func:`wait_ended`.
- :func:`deliver` waits for a ticket, then for its SMS, and tells the
  :class:`Delivery`: counts, reasons, and the :class:`~sslsms_notify.outcomes.Outcome`
  it comes to (``sslsms-notify send`` and the apprise plugin report it).
- :func:`await_group` follows an alert that ``group_wait`` gathered into its group's SMS.

SMS that other processes left in a shared outbox never count: a run reports on what
it created.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..gateway.errors import RateLimitError
from ..outcomes import Outcome, SmsState
from ..stores.base import OutboxItem, OutboxState, Tx
from ..validation import mask_credentials

if TYPE_CHECKING:
    from .notifier import Notifier, Ticket

#: how often a blocking wait looks at the outbox (``send``, apprise)
POLL = 0.03
#: how often the relay looks, between two reads in its worker thread
ASYNC_POLL = 0.05
#: the ``group_wait`` buffer is looked at this much less often than the outbox
GROUP_POLL_FACTOR = 3
#: the outbox items :func:`await_group` looks through for the group's SMS
GROUP_SCAN_LIMIT = 100_000

Outcomes = dict[str, str]
Progress = Callable[[int, int], None]


class WaitEnd(StrEnum):
    """Why a wait for SMS ended."""

    #: every SMS is delivered or failed
    DECIDED = "decided"
    #: the gateway refused the credentials while some were pending
    AUTH_FAILED = "auth_failed"
    #: the deadline passed with some pending
    DEADLINE = "deadline"
    #: the caller asked to stop (a relay shutting down)
    STOPPED = "stopped"


def waiting_for(notifier: Notifier, csms_ids: Sequence[str]) -> str | None:
    """What the SMS still pending among ``csms_ids`` wait for, in a few words (None: nothing yet).

    ``retrying after: HTTP 502 from gateway; next try in 4 s (attempt 3)``, or the pause
    after refused credentials. For a person watching a terminal, not for a script.
    """
    try:
        items = [i for i in notifier.store.outbox_get(list(csms_ids)).values() if i.last_error]
    except Exception:
        return None
    if notifier.dispatcher.auth_failed.is_set():
        return "sending paused: the gateway refused the credentials"
    if not items:
        return None
    soonest = min(items, key=lambda i: i.next_attempt_at)
    wait = max(0.0, soonest.next_attempt_at - notifier.store.now())
    when = f"next try in {wait:.0f} s" if wait >= 1 else "trying again now"
    return f"retrying after: {_one_line(soonest.last_error)[:120]}; {when} (attempt {soonest.attempts + 1})"


def wait_ended(
    notifier: Notifier, outcomes: Outcomes, deadline: float, stop: Callable[[], bool] | None = None
) -> WaitEnd | None:
    """The one step both waits take after each look: why to stop, or None to look again."""
    if not any(state == SmsState.PENDING for state in outcomes.values()):
        return WaitEnd.DECIDED
    if notifier.dispatcher.auth_failed.is_set():
        return WaitEnd.AUTH_FAILED
    if time.monotonic() >= deadline:
        return WaitEnd.DEADLINE
    if stop is not None and stop():
        return WaitEnd.STOPPED
    return None


def wait_for_sms(
    notifier: Notifier,
    csms_ids: Sequence[str],
    deadline: float,
    *,
    progress: Progress | None = None,
    stop: Callable[[], bool] | None = None,
    poll: float = POLL,
) -> tuple[Outcomes, WaitEnd]:
    """Each SMS's :class:`~sslsms_notify.outcomes.SmsState` once the wait ends, and why it ended.

    ``deadline`` is a ``time.monotonic()`` value; ``progress(done, total)`` is called
    after each look.
    """
    while True:
        outcomes = notifier.outcomes(csms_ids)
        if progress is not None:
            pending = sum(1 for state in outcomes.values() if state == SmsState.PENDING)
            progress(len(outcomes) - pending, len(outcomes))
        end = wait_ended(notifier, outcomes, deadline, stop)
        if end is not None:
            return outcomes, end
        time.sleep(poll)


async def await_sms(
    notifier: Notifier,
    csms_ids: Sequence[str],
    deadline: float,
    *,
    stop: Callable[[], bool] | None = None,
    poll: float = ASYNC_POLL,
) -> tuple[Outcomes, WaitEnd]:
    """:func:`wait_for_sms` for an event loop: each look runs in a worker thread."""
    while True:
        outcomes = await asyncio.to_thread(notifier.outcomes, csms_ids)
        end = wait_ended(notifier, outcomes, deadline, stop)
        if end is not None:
            return outcomes, end
        await asyncio.sleep(poll)


@dataclass
class Delivery:
    """What became of the SMS one alert created, and only those."""

    #: the intake's decision (a ticket's ``status``), or ``undecided``
    status: Outcome
    csms_ids: list[str] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    pending: int = 0
    #: phones whose SMS the per-phone cap held (they get a digest later)
    throttled: int = 0
    #: the gateway refused the credentials while these SMS were pending
    auth_failed: bool = False
    #: why the gateway holds back pending SMS, when the last error was a rate limit (4029...)
    rate_limited: str = ""
    #: why: the rejection, the failures' reasons, or why SMS are still pending
    reasons: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = Outcome(self.status)  # a plain word too ("queued"), checked here

    @property
    def reason(self) -> str:
        """The reasons in one line."""
        return "; ".join(r for r in self.reasons if r)

    @property
    def outcome(self) -> Outcome:
        """What the delivery comes to, as ``send`` reports it (and exits with ``outcome.exit_code``).

        The intake's own verdicts stand (``suppressed``, ``throttled``, ``unrouted``,
        ``rejected``, ``buffered``, ``silenced``, ``held``); an alert the store did not take in time is
        ``unreachable``, a dropped one ``error``. For SMS: any delivered is
        ``delivered``; else refused credentials ``auth_failed``; pending ones
        ``rate_limited`` or ``unreachable``; only failed ones ``rejected``; none at all
        (every phone capped) ``throttled``.
        """
        status = self.status
        if status in (
            Outcome.REJECTED,
            Outcome.SUPPRESSED,
            Outcome.THROTTLED,
            Outcome.UNROUTED,
            Outcome.BUFFERED,
            Outcome.SILENCED,
            Outcome.HELD,
        ):
            return status
        if status is Outcome.UNDECIDED:
            return Outcome.UNREACHABLE
        if status is not Outcome.QUEUED:  # dropped: the notifier closed, or its queue was full
            return Outcome.ERROR
        if self.delivered:
            return Outcome.DELIVERED
        if self.auth_failed:
            return Outcome.AUTH_FAILED
        if self.pending and self.rate_limited:
            return Outcome.RATE_LIMITED
        if self.pending:
            return Outcome.UNREACHABLE
        if self.failed:
            return Outcome.REJECTED
        return Outcome.THROTTLED


def deliver(
    notifier: Notifier, ticket: Ticket, deadline: float, progress: Progress | None = None
) -> Delivery:
    """Wait (until ``deadline``, a ``time.monotonic()`` value) for the SMS ``ticket`` created.

    Returns as soon as each is delivered or failed, or when the gateway refuses the
    credentials while some are pending; never waits for SMS other processes left in
    a shared outbox. ``progress(done, total)`` is called as SMS are decided. Used by
    ``sslsms-notify send`` and by the apprise plugin.
    """
    if not ticket.wait(max(0.0, deadline - time.monotonic())) or ticket.status is None:
        return Delivery(Outcome.UNDECIDED, reasons=[Outcome.UNDECIDED.meaning])
    delivery = Delivery(ticket.status, list(ticket.csms_ids), throttled=ticket.throttled)
    if ticket.status in (Outcome.REJECTED, Outcome.DROPPED):
        delivery.reasons.append(ticket.error)
        return delivery
    if not delivery.csms_ids:
        return delivery
    outcomes, end = wait_for_sms(notifier, delivery.csms_ids, deadline, progress=progress)
    delivery.auth_failed = end is WaitEnd.AUTH_FAILED
    count(notifier, delivery, outcomes)
    return delivery


def count(notifier: Notifier, delivery: Delivery, outcomes: Mapping[str, str]) -> None:
    """Fill ``delivery``'s counts and reasons from each SMS's state (and the outbox's errors)."""
    states = list(outcomes.values())
    delivery.delivered = states.count(SmsState.DELIVERED)
    delivery.failed = states.count(SmsState.FAILED)
    delivery.pending = states.count(SmsState.PENDING)
    unfinished = [i for i, s in outcomes.items() if s != SmsState.DELIVERED]
    reasons: dict[str, None] = {}
    if unfinished:
        try:
            items = notifier.store.outbox_get(unfinished)
        except Exception:
            items = {}
        for item in items.values():
            if item.last_error:
                reasons[_one_line(item.last_error)] = None
    last_error = notifier.dispatcher.last_error
    if delivery.pending and last_error is not None:
        reasons[_one_line(str(last_error))] = None
    if delivery.pending and is_rate_limit(last_error):
        delivery.rate_limited = rate_limit_reason(last_error)
    if delivery.pending and not reasons:
        reasons["no answer from the gateway yet"] = None
    delivery.reasons.extend(reasons)


def is_rate_limit(error: object) -> bool:
    """Whether the gateway's last error was a rate limit (4029, 4030, 4031)."""
    return isinstance(error, RateLimitError)


def rate_limit_reason(error: object) -> str:
    """A gateway rate limit in words, with its API code."""
    code = getattr(error, "status_code", None)
    if code == 4029:
        return "the gateway's request quota is used up (4029)"
    if code == 4031:
        return "the gateway refused more requests per second than the account allows (4031)"
    if code == 4030:
        return "the gateway refused a request to more than 100 numbers (4030)"
    return f"the gateway limits our requests ({_one_line(str(error))})"


def await_group(
    notifier: Notifier, delivery: Delivery, names: Sequence[str], since: float, deadline: float
) -> None:
    """``group_wait``: once the group's buffer is sent, wait for the SMS it became.

    A group SMS carries ids of its own, made when the buffer is sent (by whichever
    process on the store sends it), and nothing in the store ties them to the alerts
    the buffer gathered. So it is found by its phones and its time: the open and
    dead outbox items to the group's phones created after this alert (``since``, a
    store time), among the first :data:`GROUP_SCAN_LIMIT` of the outbox.
    """
    store = notifier.store
    numbers = {n for name in names for n in notifier.router.numbers(name)}

    def buffered(tx: Tx) -> bool:
        tx.groups.load(list(names))
        return any(tx.groups.get(name) is not None for name in names)

    while store.transact(buffered):
        if time.monotonic() >= deadline:
            return
        time.sleep(POLL * GROUP_POLL_FACTOR)

    def ours() -> tuple[list[OutboxItem], list[OutboxItem]]:
        items = [
            i
            for i in store.outbox_list(None, limit=GROUP_SCAN_LIMIT)
            if i.msisdn in numbers and i.created_at >= since
        ]
        return [i for i in items if i.state is not OutboxState.DEAD], [
            i for i in items if i.state is OutboxState.DEAD
        ]

    open_items, dead = ours()
    while open_items and time.monotonic() < deadline and not notifier.dispatcher.auth_failed.is_set():
        time.sleep(POLL)
        open_items, dead = ours()

    def held(tx: Tx) -> int:
        tx.digests.load(list(numbers))
        return sum(1 for n in numbers if tx.digests.get(n) is not None)

    delivery.status = Outcome.QUEUED
    delivery.auth_failed = bool(open_items) and notifier.dispatcher.auth_failed.is_set()
    delivery.csms_ids = [i.csms_id for i in open_items + dead]
    count(
        notifier,
        delivery,
        {i.csms_id: SmsState.PENDING for i in open_items} | {i.csms_id: SmsState.FAILED for i in dead},
    )
    delivery.throttled = int(store.transact(held))
    # sent SMS leave the outbox: the group's other phones got theirs
    delivery.delivered = max(0, len(numbers) - delivery.pending - delivery.failed - delivery.throttled)


def _one_line(text: Any) -> str:
    """``text`` on one line, every credential of every URL in it masked."""
    return " ".join(mask_credentials(str(text)).split())
