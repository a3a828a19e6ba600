"""A second gateway account, for when the first refuses our credentials or stays unreachable.

``[gateway.secondary]`` (``sid``, ``api_token``, ``base_url``) or ``Notifier(secondary=...)``.
The dispatcher sends through the first account (the primary) until it is **degraded**:
it refused the credentials (4001-4003), or it has failed every request for
``fallback_after`` seconds. From then on, each claimed SMS that may move goes to the
second account; about every ``auth_pause`` seconds one SMS is sent through the primary
instead, as a probe, and the first request the primary takes ends the failover.

**When an SMS may move** (each SMS is still delivered exactly once across both):

- only if no request carrying it may have reached the primary: not ``maybe_sent``, and,
  if bound to a bulk or dynamic request, no member of that request ``maybe_sent``. An SMS
  whose outcome at the primary is unknown (a timeout, a dropped connection, a lease taken
  over from a process that died mid-request) stays with the primary for good: the
  primary's "Duplicate CMS ID" (spec 3.1, 4023: "CSMS ID is duplicate in the same day")
  is what makes its resend harmless there, and the second account cannot know what the
  first one took. Such an SMS waits for the primary, or becomes a dead letter at
  ``max_age``;
- moving writes a **handoff** record (:class:`~..stores.records.Handoff`) in the store, in
  one transaction, before any request to the second account carries the SMS (and its
  binding to a primary request is dissolved in the outbox first). Every process on the
  store reads the handoffs of what it claims, so an SMS handed over is never sent through
  the primary again, by any process: the primary's duplicate check cannot see what the
  second account sent;
- an SMS of the second account follows the same rules there: an unknown outcome is
  resent exactly as it was, to the second account; credentials it refuses hold the SMS
  (``auth_pause``), they never go back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..gateway.client import GatewayClient
from ..stores.base import OutboxItem, Store, Tx
from ..stores.records import Handoff

SECONDARY = "secondary"
#: how long a handoff is kept: longer than any SMS stays in the outbox (max_age and retention)
HANDOFF_MEMORY = 8 * 86400.0


def movable(item: OutboxItem, claimed: Sequence[OutboxItem]) -> bool:
    """Whether ``item`` may go to the second account: no request carrying it may have reached
    the primary (itself, and every claimed member of its bound request, not ``maybe_sent``)."""
    if item.maybe_sent:
        return False
    if not item.batch_id:
        return True
    return not any(other.maybe_sent for other in claimed if other.batch_id == item.batch_id)


class Failover:
    """The second account and the dispatcher's choice between the two (see the module docstring).

    ``after``: seconds of failing requests before the primary counts as degraded;
    ``probe_every``: while degraded, how often one SMS tries the primary.
    """

    def __init__(self, client: GatewayClient, *, after: float, probe_every: float) -> None:
        self.client = client
        self.after = after
        self.probe_every = probe_every
        self.reset()

    def reset(self) -> None:
        """Per-process state (a forked child starts its own)."""
        self._probe_at = 0.0
        #: the second account refused our credentials (said once, until it accepts them)
        self.refused = False

    def __repr__(self) -> str:
        return f"Failover({self.client!r}, after={self.after:g}s)"

    def degraded(self, *, auth_failed: bool, failing_since: float | None) -> bool:
        """The primary refuses our credentials, or has failed every request for ``after`` seconds."""
        return auth_failed or (failing_since is not None and time.monotonic() - failing_since >= self.after)

    def split(
        self, store: Store, items: list[OutboxItem], *, degraded: bool, primary_paused: bool
    ) -> tuple[list[OutboxItem], list[OutboxItem]]:
        """(what goes to the primary, what goes to the second account) of the claimed ``items``.

        SMS handed over before stay with the second account. While ``degraded``, every SMS
        that may move (:func:`movable`) is handed over now (a handoff record each, written
        before any request), but for one probe of the primary about every ``probe_every``
        seconds (not while the primary's sending is paused).
        """
        probing = degraded and not primary_paused and time.monotonic() >= self._probe_at

        def decide(tx: Tx) -> tuple[set[str], list[str], str | None]:
            tx.handoffs.load(i.csms_id for i in items)
            owned = {i.csms_id for i in items if tx.handoffs.get(i.csms_id) is not None}
            if not degraded:
                return owned, [], None
            candidates = [i for i in items if i.csms_id not in owned and movable(i, items)]
            probe = None
            if probing:
                singles = [i for i in candidates if not i.batch_id]
                if singles:  # a probe goes alone: its outcome concerns one SMS
                    probe = min(singles, key=lambda i: (i.attempts, i.created_at)).csms_id
            moving = [i.csms_id for i in candidates if i.csms_id != probe]
            for csms_id in moving:
                tx.handoffs.put(csms_id, Handoff(csms_id, SECONDARY, tx.now, tx.now + HANDOFF_MEMORY))
            return owned, moving, probe

        owned, moving, probe = store.transact(decide)
        if probe is not None:
            self._probe_at = time.monotonic() + self.probe_every
        moved = set(moving)
        unbound = [i.unbound() for i in items if i.csms_id in moved and i.batch_id]
        if unbound:  # the binding to a primary request dissolves in the outbox before anything is sent
            store.outbox_update(unbound)
        unbinding = {i.csms_id: i for i in unbound}
        primary = [i for i in items if i.csms_id not in owned and i.csms_id not in moved]
        secondary = [unbinding.get(i.csms_id, i) for i in items if i.csms_id in owned or i.csms_id in moved]
        return primary, secondary


def forget_handoffs(tx: Tx, limit: int) -> None:
    """Handoffs past their memory (their SMS left the outbox long ago), forgotten."""
    keys = tx.due("handoffs", limit)
    if keys:
        tx.handoffs.load(keys)
        for key in keys:
            handoff = tx.handoffs.get(key)
            if handoff is not None and handoff.expires_at <= tx.now:
                tx.handoffs.delete(key)
