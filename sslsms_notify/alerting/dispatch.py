"""Send what the outbox holds: plan batches, pace to the account's TPS, record every outcome.

Runs on its own thread (the Notifier's dispatch loop): it is the only part of
the pipeline that waits for the network, and nothing else waits for it.

A failure of a whole bulk or dynamic request is *definite* when the gateway
answered it with an API status code, and *unknown* when the answer never came
(network, timeout, an HTML error page): the gateway may have accepted it.

- unknown: back off and resend the *very same* request later: the same
  members under the same ids (see :mod:`.planner`), all members due at the
  same moment, so the gateway's "Duplicate CMS ID" makes it exactly-once;
- "Duplicate CMS ID" is taken for "delivered" only for a request every SMS of
  which went out before under the same ids (spec 3.1, 4023: "CSMS ID is
  duplicate in the same day"); for an SMS no request of ours carried under that
  id it means the id was spent elsewhere, and the SMS becomes a dead letter
  that says so rather than a page reported delivered;
- definite (e.g. 4028, 4030, 5000): resend as singles, one per recipient, each
  with its own csms_id, so one bad number cannot silence the rest;
- credentials refused (4001-4003): nothing is lost, but sending pauses for
  ``auth_pause`` seconds; one log line, not one per SMS or per retry;
- rate limits: back off, nothing is lost;
- a recipient the gateway calls invalid or blocked: a dead letter, not retried;
- "Duplicate MSISDN" for an SMS we sent: *not* delivered (spec 3.2: "MSISDN is
  duplicate on the same request"). We never put a number twice in a request,
  so this is the gateway's mistake; the SMS is tried again on its own.

A gateway that fails is logged once when it starts failing and once when it
recovers, not once per request.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._log import get_logger, say_if_unseen
from ..gateway.client import GatewayClient
from ..gateway.codes import SmsStatus, SmsStatusMessage
from ..gateway.errors import AuthError, BadRequestError, GatewayError, RateLimitError, TransportError
from ..gateway.ids import new_csms_id
from ..gateway.models import DynamicMessage, SendResult, SmsInfo, is_duplicate_id
from ..stores.base import OutboxItem, OutboxState, Store, StoreUnavailableError
from .failover import SECONDARY, Failover, movable
from .fallback import Watch
from .planner import Batch, plan_batches
from .stats import Stats

_log = get_logger("sslsms_notify.dispatch")
TPS_KEY = "gateway:tps"
TPS_SAFETY = 0.95
_DUPLICATE_MSISDN = SmsStatusMessage.DUPLICATE_MSISDN.lower()
#: attempts of one request within a call; the outbox retries later with its own backoff
IN_CALL_ATTEMPTS = 2
#: seconds before members of a bound request claimed without the rest are looked at again
INCOMPLETE_DELAY = 1.0


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    """How the dispatcher paces, retries and gives up (``Notifier(dispatch=...)``).

    Attributes:
        tps: requests per second to the gateway, shared by every process on the store
            (paced at 95 % of it, evenly spaced).
        backoff: seconds before an SMS is tried again after a failed attempt; doubles
            with each attempt, with jitter, up to ``max_backoff``.
        max_backoff: the longest wait between two attempts of an SMS, in seconds.
        max_age: seconds after which an SMS still not delivered becomes a dead letter.
        lease: seconds a claimed SMS belongs to one process; a live process renews it
            every third of this, so a dead process's SMS are taken over this long after.
        claim_limit: SMS claimed from the outbox per round.
        auth_pause: seconds sending pauses after the gateway refused the credentials
            (4001-4003); the SMS are kept.
    """

    #: requests per second to the gateway, shared by every process on the store
    tps: float = 10.0
    #: first backoff after a failed attempt; doubles up to ``max_backoff``
    backoff: float = 1.0
    max_backoff: float = 60.0
    #: an SMS older than this is given up on (a dead letter)
    max_age: float = 3600.0
    #: how long a claim is ours without renewal; a live process renews it every
    #: third of this, so a dead process's SMS are taken over this long after it died
    lease: float = 6.0
    #: SMS claimed per round
    claim_limit: int = 500
    #: how long sending pauses after the gateway refused our credentials
    auth_pause: float = 60.0

    def __post_init__(self) -> None:
        for name in ("tps", "max_age", "lease", "auth_pause"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ValueError(f"{name} must be a positive finite number of seconds, not {value!r}")
        if not 0 <= self.backoff <= self.max_backoff:
            raise ValueError("backoff must be between 0 and max_backoff")
        if self.claim_limit < 1:
            raise ValueError(f"claim_limit must be at least 1, not {self.claim_limit}")


def _unknown_outcome(error: GatewayError) -> bool:
    """The gateway may have processed the request: no API status came back, and a connection did."""
    if isinstance(error, TransportError) and not error.request_sent:
        return False
    return error.status_code is None and not isinstance(error, AuthError | RateLimitError)


class Dispatcher:
    def __init__(
        self,
        client: GatewayClient,
        store: Store,
        stats: Stats,
        policy: DispatchPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.store = store
        self.stats = stats
        self.policy = policy or DispatchPolicy()
        self._sleep = sleep
        #: the last whole-request failure, for callers that must explain a delay (the CLI)
        self.last_error: GatewayError | None = None
        #: set when the gateway refused our credentials; cleared by the next success
        self.auth_failed = threading.Event()
        #: store time until which nothing is sent (credentials refused)
        self.paused_until = 0.0
        #: csms_ids claimed by this process and not yet recorded (their leases are renewed)
        self.in_flight: set[str] = set()
        #: set by Notifier.close(): finish the request under way, send nothing more
        self.stopping = False
        #: called with each recorded item (state SENT or DEAD) after it is written
        self.on_outcome: Callable[[list[OutboxItem]], None] | None = None
        #: called after each request with (kind, seconds, outcome), e.g. for a metrics histogram;
        #: outcome is "ok", or the error's class name
        self.on_request: Callable[[str, float, str], None] | None = None
        #: what the fallback channel learns of the SMS path (see :mod:`.fallback`), if one is set
        self.watch: Watch | None = None
        #: when the request under way left (store time; kept only for ``watch``)
        self._sent_at = 0.0
        #: the second gateway account (see :mod:`.failover`), if one is set
        self.failover: Failover | None = None
        #: when the gateway started failing (monotonic), None while it answers
        self._failing_since: float | None = None
        self._failed_requests = 0

    def after_fork_in_child(self) -> None:
        """A forked child sends nothing of the parent's: no claims, no pause of its own yet."""
        self.in_flight = set()
        self.auth_failed = threading.Event()

    def run_once(self) -> int:
        """Send one round of due SMS; returns how many were attempted."""
        paused = bool(self.paused_until) and self.store.now() < self.paused_until
        if paused and self.failover is None:
            return 0
        items = self.store.outbox_claim(self.policy.claim_limit, self.policy.lease)
        if not items:
            return 0
        self.in_flight.update(i.csms_id for i in items)
        try:
            batches = self._plan(items, paused)
            # Bindings are written before the request: whatever happens to this process
            # mid-request, the same request (members and ids) is what goes out again.
            newly_bound = [i for b in batches if b.new for i in b.items]
            if newly_bound:
                try:
                    self.store.outbox_update(newly_bound)
                except StoreUnavailableError as exc:
                    # Bindings the store may lack are not sent: a rerun from its copy would be
                    # another request the gateway cannot tell from this one. Their claims run
                    # out and they are planned again; the rest of the round goes on.
                    _log.warning("SMS not sent: their request's binding is not in the store", error=str(exc))
                    batches = [b for b in batches if not b.new]
            for position, batch in enumerate(batches):
                if self.stopping:  # closing: what was not sent goes back, due now, for whoever is next
                    rest = [i for b in batches[position:] for i in b.items]
                    now = self.store.now()
                    self.store.outbox_update(
                        [i.evolve(state=OutboxState.PENDING, next_attempt_at=now) for i in rest]
                    )
                    break
                if self.paused_until and self.store.now() < self.paused_until:  # credentials refused
                    if self.failover is not None:  # the second account's requests go on
                        self._hold_for_primary(batch)
                        continue
                    rest = [i for b in batches[position:] for i in b.items]
                    self._retry_later(rest, str(self.last_error), delay=self.paused_until - self.store.now())
                    break
                self._send(batch)
        finally:
            self.in_flight.difference_update(i.csms_id for i in items)
        return len(items)

    def _plan(self, items: list[OutboxItem], paused: bool) -> list[Batch]:
        """The requests for claimed SMS: through the primary, and the second account's (see .failover)."""
        accounts = [("primary", items)]
        if self.failover is not None:
            degraded = self.failover.degraded(
                auth_failed=self.auth_failed.is_set(), failing_since=self._failing_since
            )
            primary, secondary = self.failover.split(
                self.store, items, degraded=degraded, primary_paused=paused
            )
            accounts = [("primary", primary), (SECONDARY, secondary)]
        batches: list[Batch] = []
        for account, chosen in accounts:
            plan = plan_batches(chosen, new_csms_id)
            if plan.incomplete:
                self._hold_incomplete(plan.incomplete)
            for batch in plan.batches:
                batch.account = account
            batches += plan.batches
        return batches

    def _hold_for_primary(self, batch: Batch) -> None:
        """A primary request while the primary refuses our credentials: SMS that may move are due
        again now (the second account takes them next round); the others wait out the pause."""
        if batch.account != "primary":
            self._send(batch)
            return
        stays = not all(movable(i, batch.items) for i in batch.items)
        delay = self.paused_until - self.store.now() if stays else 0.0
        self._retry_later(batch.items, str(self.last_error), delay=delay)

    def _hold_incomplete(self, items: list[OutboxItem]) -> None:
        """Members of a bound request that came without the rest wait for it: never sent as a part."""
        _log.warning(
            "part of a bound request was claimed without the rest; holding it back until it is whole",
            count=len(items),
            batch_ids=",".join(sorted({i.batch_id or "" for i in items})[:5]),
        )
        later = self.store.now() + INCOMPLETE_DELAY
        self.store.outbox_update([i.evolve(state=OutboxState.PENDING, next_attempt_at=later) for i in items])

    # -- one request ------------------------------------------------------
    def _pace(self) -> None:
        # Evenly spaced with no burst: the gateway counts requests in a sliding
        # second, where a GCRA burst of N would let 2N through. The margin
        # absorbs clock jitter between us and the gateway.
        rate = self.policy.tps * TPS_SAFETY
        wait = self.store.rate_acquire(TPS_KEY, rate, 1, reserve=True)
        if wait > 0:
            self._sleep(wait)

    def _call(self, batch: Batch) -> SendResult:
        self._pace()
        items = batch.items
        client = (
            self.failover.client if self.failover is not None and batch.account == SECONDARY else self.client
        )
        # The outbox retries with its own backoff; inside one call, one quick retry at
        # most (a dropped connection), so a call never holds its SMS for long.
        retry = client.retry.capped(max_attempts=IN_CALL_ATTEMPTS, max_delay=1.0, total_timeout=5.0)
        # "Duplicate CMS ID" means "delivered" only if every SMS of this request went out
        # before under these very ids; within the call, the client's own retry of the same
        # request counts too.
        carried = batch.carried
        if batch.kind == "bulk":
            return client.send_bulk(
                [i.msisdn for i in items],
                items[0].text,
                batch_csms_id=batch.batch_id,
                is_retry=carried,
                retry=retry,
            )
        if batch.kind == "dynamic":
            return client.send_dynamic(
                [DynamicMessage(i.msisdn, i.text, i.csms_id) for i in items], is_retry=carried, retry=retry
            )
        return client.send_single(
            items[0].msisdn, items[0].text, csms_id=items[0].csms_id, is_retry=carried, retry=retry
        )

    def _send(self, batch: Batch) -> None:
        retried = sum(1 for i in batch.items if i.attempts > 0)
        started = time.perf_counter()
        if self.watch is not None:  # evidence is dated when the request left: the gateway's order
            self._sent_at = self.store.now()
        try:
            result = self._call(batch)
        except GatewayError as error:
            self._observe(batch.kind, started, type(error).__name__)
            self._count_requests(error.result, retried)
            self._on_request_failure(batch, error)
            return
        except ValueError as exc:
            # Refused before any request (an id, number or text the spec does not allow, say
            # from a store written by hand): nothing was sent. One bad SMS must not hold up
            # the rest, round after round: alone it becomes a dead letter with the reason.
            # A request that may have gone out before is never split: it dies whole.
            if len(batch.items) > 1 and not any(i.maybe_sent for i in batch.items):
                for item in batch.items:
                    self._send(Batch("single", [item.unbound()], account=batch.account))
            else:
                self._write([self._dead(i, f"refused before sending: {exc}") for i in batch.items])
            return
        self._observe(batch.kind, started, "ok")
        self._count_requests(result, retried)
        if batch.account != "primary":  # the primary's state is the primary's requests' alone
            if self.failover is not None and self.failover.refused:
                self.failover.refused = False
                _log.warning("the second gateway account accepts our credentials again")
            self._record(batch, result.messages)
            return
        self._gateway_answered()
        if self.watch is not None:
            self.watch.request_ok(self._sent_at)
        if self.auth_failed.is_set():
            _log.warning("gateway accepts our credentials again")
            self.auth_failed.clear()
        self._record(batch, result.messages)

    def _observe(self, kind: str, started: float, outcome: str) -> None:
        if self.on_request is not None:
            with contextlib.suppress(Exception):
                self.on_request(kind, time.perf_counter() - started, outcome)

    def _count_requests(self, result: SendResult | None, retried_items: int) -> None:
        """Requests made, plus the client's retries and our own re-attempts of SMS."""
        if result is None:  # an error raised before any answer was read
            self.stats.add(requests=1, retried=retried_items)
        else:
            self.stats.add(requests=result.requests, retried=result.retries + retried_items)

    def _record(self, batch: Batch, messages: list[SmsInfo]) -> None:
        """The gateway answered the request: each SMS's own outcome, and the binding dissolves."""
        done, dead, misread, fresh, alone = [], [], [], [], []
        for position, item in enumerate(batch.items):
            info = messages[position] if position < len(messages) else None
            if info is not None and info.delivered:
                done.append(item.evolve(state=OutboxState.SENT, attempts=item.attempts + 1))
            elif info is not None and info.status_message.strip().lower() == _DUPLICATE_MSISDN:
                misread.append(item.unbound().evolve(maybe_sent=False))
            elif info is not None and is_duplicate_id(info):
                # Spec 3.1: 4023 is "CSMS ID is duplicate in the same day". No request of ours
                # carried this SMS under that id, so it says nothing about this SMS; sending it
                # under another id could page twice if a copy of our state sent it.
                dead.append(
                    self._dead(
                        item.unbound(),
                        f"the gateway says id {info.csms_id or item.csms_id} was already used today, "
                        "but no request of ours carried this SMS under it; not resent "
                        "('outbox retry' sends it again)",
                    )
                )
            elif info is not None and info.sms_status is SmsStatus.INVALID:
                dead.append(self._dead(item.unbound(), f"{info.sms_status}: {info.status_message}"))
            elif batch.kind == "bulk":
                # The request got through (its id is spent) but this SMS has no clear status:
                # under its own csms_id, which never reached the gateway. At worst a second copy.
                fresh.append(item.unbound().evolve(maybe_sent=False))
            else:
                # Its own csms_id went out: it goes again alone under that id (exactly-once).
                alone.append(item.unbound().evolve(maybe_sent=True))
        self.stats.add(sent=len(done), **({"secondary": len(done)} if batch.account != "primary" else {}))
        self._write(done + dead)
        if misread:
            _log.warning(
                "gateway answered 'Duplicate MSISDN' for SMS sent once to each number; "
                "sending them again on their own",
                count=len(misread),
                kind=batch.kind,
            )
            self._retry_later(misread, "Duplicate MSISDN")
        if fresh or alone:
            self._retry_later(fresh + alone, "no clear status for this SMS in the gateway's answer")

    def _gateway_answered(self) -> None:
        if self._failing_since is not None:
            _log.warning(
                "gateway recovered",
                failing_for=f"{time.monotonic() - self._failing_since:.0f}s",
                failed_requests=self._failed_requests,
            )
            self._failing_since = None
            self._failed_requests = 0

    def _gateway_failed(self, error: GatewayError) -> None:
        """One line when the gateway starts failing (then one when it recovers), not one per request."""
        self._failed_requests += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            _log.warning(
                "gateway failing; SMS are kept and retried with backoff",
                error=str(error),
                kind=type(error).__name__,
            )

    def _on_request_failure(self, batch: Batch, error: GatewayError) -> None:
        self.last_error = error
        reason = str(error)
        if batch.account != "primary":
            self._on_secondary_failure(batch, error)
            return
        if self.watch is not None and not isinstance(error, BadRequestError):
            if isinstance(error, AuthError):
                self.watch.auth_refused(self._sent_at, reason)
            else:
                self.watch.request_failed(self._sent_at, min(i.created_at for i in batch.items), reason)
        if isinstance(error, AuthError):
            first = not self.auth_failed.is_set()
            self.auth_failed.set()
            self.paused_until = self.store.now() + self.policy.auth_pause
            if first:
                _log.error(
                    "gateway refused our credentials; SMS kept, sending paused",
                    error=reason,
                    pause_seconds=self.policy.auth_pause,
                )
            # An earlier attempt of this call may have got through: it stays with this request.
            unknown = error.earlier_attempt_unknown
            moves = (
                self.failover is not None
                and not unknown
                and all(movable(i, batch.items) for i in batch.items)
            )
            delay = 0.0 if moves else self.policy.auth_pause
            self._retry_later(batch.items, reason, delay=delay, maybe_sent=unknown)
            return
        if isinstance(error, BadRequestError):
            self._gateway_answered()  # it judged this request: the gateway itself works
        else:
            self._gateway_failed(error)
        self._after_failure(batch, error, reason)

    def _on_secondary_failure(self, batch: Batch, error: GatewayError) -> None:
        """The second account's request failed: the same rules, its SMS staying with it."""
        if isinstance(error, AuthError):  # held there: an SMS handed over never goes back
            assert self.failover is not None
            if not self.failover.refused:
                self.failover.refused = True
                _log.error(
                    "the second gateway account refused our credentials; its SMS wait", error=str(error)
                )
            self._retry_later(batch.items, str(error), delay=self.policy.auth_pause)
            return
        self._after_failure(batch, error, str(error))

    def _after_failure(self, batch: Batch, error: GatewayError, reason: str) -> None:
        sent_before = batch.kind != "single" and any(i.maybe_sent for i in batch.items)
        unknown = _unknown_outcome(error) or error.earlier_attempt_unknown
        if (
            unknown
            or (isinstance(error, RateLimitError) and error.retryable)
            or sent_before  # singles now could repeat what that request delivered
        ):
            # The gateway may have this request: resend the very same one later.
            self._retry_later(batch.items, reason, maybe_sent=unknown)
            return
        if batch.kind == "single":
            if isinstance(error, BadRequestError):
                self._write([self._dead(batch.items[0], reason)])
            else:
                self._retry_later(batch.items, reason)
            return
        # A definite whole-request failure of bulk/dynamic: one SMS each.
        self.stats.add(fallbacks=1)
        _log.warning(
            "batch request failed as a whole; sending singles",
            kind=batch.kind,
            recipients=len(batch.items),
            error=reason,
        )
        for item in batch.items:
            self._send(Batch("single", [item.unbound()], account=batch.account))

    def _dead(self, item: OutboxItem, reason: str) -> OutboxItem:
        self.stats.add(failed=1)
        _log.warning("SMS given up", csms_id=item.csms_id, reason=reason)
        say_if_unseen(_log.name, "dead", f"an SMS was given up: {reason}", logging.WARNING)
        if self.watch is not None:
            self.watch.dead_letter(self.store.now(), reason)
        return item.evolve(
            state=OutboxState.DEAD,
            last_error=reason,
            attempts=item.attempts + 1,
            next_attempt_at=self.store.now(),  # a dead letter's time is when it died
        )

    def _retry_later(
        self,
        items: list[OutboxItem],
        reason: str,
        *,
        maybe_sent: bool = False,
        delay: float | None = None,
    ) -> None:
        """Back to pending, all due at one moment (a bound request must come due whole).

        An SMS that may have gone out keeps its binding; any other is free to be
        planned anew. A bound request expires whole, when its oldest member does.
        """
        if not items:
            return
        now = self.store.now()
        attempts = max(i.attempts for i in items) + 1
        if delay is None:
            wait = min(self.policy.max_backoff, self.policy.backoff * 2 ** (attempts - 1))
            wait *= random.uniform(0.5, 1.0)  # spread retries of many processes apart
        else:
            wait = max(0.0, delay)
        oldest: dict[str, float] = {}
        for item in items:
            if item.batch_id:
                oldest[item.batch_id] = min(oldest.get(item.batch_id, item.created_at), item.created_at)
        updated = []
        for item in items:
            keep = maybe_sent or item.maybe_sent
            item = item if keep else item.unbound()
            born = oldest.get(item.batch_id, item.created_at) if item.batch_id else item.created_at
            if now - born >= self.policy.max_age:
                maybe = " (its last request's outcome is unknown: it may have been delivered)" if keep else ""
                why = f"expired after {item.attempts + 1} attempts: {reason}{maybe}"
                updated.append(self._dead(item, why))
                continue
            updated.append(
                item.evolve(
                    state=OutboxState.PENDING,
                    attempts=item.attempts + 1,
                    next_attempt_at=now + wait,
                    last_error=reason,
                    maybe_sent=keep,
                )
            )
        self._write(updated)

    def _write(self, items: list[OutboxItem]) -> None:
        if not items:
            return
        self.store.outbox_update(items)
        settled = [i for i in items if i.state in (OutboxState.SENT, OutboxState.DEAD)]
        if settled and self.on_outcome is not None:
            self.on_outcome(settled)
