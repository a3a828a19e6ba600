"""Send what the outbox holds: plan batches, pace to the account's TPS, record every outcome.

A failure of a whole bulk or dynamic request is *definite* when the gateway
answered it with an API status code, and *unknown* when the answer never came
(network, timeout, an HTML error page): the gateway may have accepted it.

- definite (e.g. 4028, 4030, 5000): resend as singles, one per recipient, each
  with its own csms_id, so one bad number cannot silence the rest;
- unknown: back off and resend the *same* request later (same batch_csms_id),
  so the gateway's "Duplicate CMS ID" makes it exactly-once;
- auth or rate limits: back off, nothing is lost;
- a recipient the gateway calls invalid or blocked: a dead letter, not retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._log import get_logger
from ..gateway.client import GatewayClient
from ..gateway.codes import SmsStatus, SmsStatusMessage
from ..gateway.errors import AuthError, BadRequestError, GatewayError, RateLimitError
from ..gateway.ids import new_csms_id
from ..gateway.models import SendResult, SmsInfo
from ..stores.base import OutboxItem, OutboxState, Store
from .planner import Batch, plan_batches
from .stats import Stats

_log = get_logger("sslsms_notify.dispatch")
TPS_KEY = "gateway:tps"
TPS_SAFETY = 0.95


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    #: requests per second to the gateway, shared by every process on the store
    tps: float = 10.0
    #: first backoff after a failed attempt; doubles up to ``max_backoff``
    backoff: float = 1.0
    max_backoff: float = 60.0
    #: an SMS older than this is given up on (a dead letter)
    max_age: float = 3600.0
    #: how long a claimed batch is ours before another worker may take it
    lease: float = 60.0
    #: SMS claimed per round
    claim_limit: int = 500

    def __post_init__(self) -> None:
        if self.tps <= 0:
            raise ValueError(f"tps must be positive, not {self.tps}")
        if self.max_age <= 0 or self.lease <= 0 or self.backoff < 0:
            raise ValueError("max_age and lease must be positive, backoff not negative")


def _unknown_outcome(error: GatewayError) -> bool:
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

    def run_once(self) -> int:
        """Send one round of due SMS; returns how many were attempted."""
        items = self.store.outbox_claim(self.policy.claim_limit, self.policy.lease)
        if not items:
            return 0
        batches = plan_batches(items, new_csms_id)
        # The batch binding is written before the request: a crash mid-request
        # resends the same bulk with the same batch_csms_id.
        newly_bound = [i for b in batches if b.kind == "bulk" for i in b.items if i.attempts == 0]
        if newly_bound:
            self.store.outbox_update(newly_bound)
        for batch in batches:
            self._send(batch)
        return len(items)

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
        if batch.kind == "bulk":
            return self.client.send_bulk(
                [i.msisdn for i in items],
                items[0].text,
                batch_csms_id=batch.batch_id,
                is_retry=True,
            )
        if batch.kind == "dynamic":
            return self.client.send_dynamic(
                [(i.msisdn, i.text, i.csms_id) for i in items],
                is_retry=True,  # type: ignore[misc]
            )
        return self.client.send_single(
            items[0].msisdn, items[0].text, csms_id=items[0].csms_id, is_retry=True
        )

    def _send(self, batch: Batch) -> None:
        retried = sum(1 for i in batch.items if i.attempts > 0)
        try:
            result = self._call(batch)
        except GatewayError as error:
            self._count_requests(error.result, retried)
            self._on_request_failure(batch, error)
            return
        self._count_requests(result, retried)
        self._record(batch, result.messages)

    def _count_requests(self, result: SendResult | None, retried_items: int) -> None:
        """Requests made, plus the client's retries and our own re-attempts of SMS."""
        if result is None:  # an error raised before any answer was read
            self.stats.add(requests=1, retried=retried_items)
        else:
            self.stats.add(requests=result.requests, retried=result.retries + retried_items)

    def _record(self, batch: Batch, messages: list[SmsInfo]) -> None:
        done, later, dead = [], [], []
        for item, info in zip(batch.items, messages, strict=False):
            if info.delivered or info.status_message == SmsStatusMessage.DUPLICATE_MSISDN:
                done.append(item.evolve(state=OutboxState.SENT, attempts=item.attempts + 1))
            elif info.sms_status in (SmsStatus.INVALID, SmsStatus.DUPLICATE):
                dead.append(self._dead(item, f"{info.sms_status}: {info.status_message}"))
            else:
                later.append(item)
        self.stats.add(sent=len(done))
        self.store.outbox_update(done + dead)
        if later:
            self._retry_later(later, "no answer for this SMS")

    def _on_request_failure(self, batch: Batch, error: GatewayError) -> None:
        self.last_error = error
        reason = str(error)
        if isinstance(error, AuthError):
            _log.error("gateway refused our credentials; SMS kept for retry", error=reason)
            self._retry_later(batch.items, reason)
            return
        bound_to_unknown_bulk = batch.kind == "bulk" and any(i.maybe_sent for i in batch.items)
        if (
            _unknown_outcome(error)
            or (isinstance(error, RateLimitError) and error.retryable)
            or bound_to_unknown_bulk  # singles now could repeat what that bulk delivered
        ):
            # The gateway may have this request: resend the very same one later.
            self._retry_later(batch.items, reason, maybe_sent=_unknown_outcome(error))
            return
        if batch.kind == "single":
            if isinstance(error, BadRequestError):
                self.store.outbox_update([self._dead(batch.items[0], reason)])
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
            self._send(Batch("single", [item.evolve(batch_id=None)]))

    def _dead(self, item: OutboxItem, reason: str) -> OutboxItem:
        self.stats.add(failed=1)
        _log.warning("SMS given up", csms_id=item.csms_id, reason=reason)
        return item.evolve(state=OutboxState.DEAD, last_error=reason, attempts=item.attempts + 1)

    def _retry_later(self, items: list[OutboxItem], reason: str, *, maybe_sent: bool = False) -> None:
        now = self.store.now()
        updated = []
        for item in items:
            attempts = item.attempts + 1
            if now - item.created_at >= self.policy.max_age:
                updated.append(self._dead(item, f"expired after {attempts} attempts: {reason}"))
                continue
            delay = min(self.policy.max_backoff, self.policy.backoff * 2 ** (attempts - 1))
            delay *= random.uniform(0.5, 1.0)  # spread retries of many processes apart
            updated.append(
                item.evolve(
                    state=OutboxState.PENDING,
                    attempts=attempts,
                    next_attempt_at=now + delay,
                    last_error=reason,
                    maybe_sent=item.maybe_sent or maybe_sent,
                    # an unknown outcome keeps its bulk binding; a definite one frees it
                    batch_id=item.batch_id if maybe_sent or item.maybe_sent else None,
                )
            )
        self.store.outbox_update(updated)
