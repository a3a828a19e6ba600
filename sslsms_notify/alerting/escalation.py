"""Escalation by time: an alert nobody acknowledges or resolves in time pages more people, once.

A route with ``escalate_after = "15m"`` and ``escalate_to = ["managers"]`` gives each alert
it matches, when it first pages, an **escalation** (a store record keyed by the alert's
**ack code**) and its SMS a tail `` ack:4F2K9M``. Then, whichever comes first:

- someone acknowledges it (``sslsms-notify ack 4F2K9M``, ``POST /v1/ack/4F2K9M``,
  :meth:`Notifier.ack <sslsms_notify.Notifier.ack>`): it is closed, nothing more pages;
- it resolves (an Alertmanager or Grafana ``resolved`` of its lifecycle, or
  :meth:`Notifier.resolve <sslsms_notify.Notifier.resolve>` with its key): closed too;
- its time comes: the sweep (:mod:`.oncall`) pages the escalation groups once,
  ``[ESCALATED 15m] <the alert's SMS>``, in the transaction that closes the record, so
  with several relays on one store it pages once.

**Codes.** Six characters of Crockford's base 32 (``0-9`` and ``A-Z`` without ``I L O
U``; typed in any case, ``O`` read as ``0`` and ``I``/``L`` as ``1``): 30 bits from the
OS's randomness, about a billion codes. Only the codes of open escalations (and of those
closed less than a day ago, which acknowledge nothing) exist at any time, so a guess
hits one with odds of (codes alive) / 2^30: with a hundred alerts open, one in ten
million. Failed tries are limited per client (a relay's peer address, the command line,
a library caller) to :data:`FAILED_TRIES` a minute, shared through the store, so a
client guessing day and night gets 7,200 tries: odds below one in a thousand for the
whole day with a hundred alerts open. And every way to try needs a relay token or
access to the store in the first place.

Everything here acts through the transaction it is given (:class:`~..stores.base.Tx`):
it may run more than once for one commit (Redis reruns after a conflict).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from ..stores.base import Tx
from ..stores.records import Escalation, EscalationKey
from .formatting import with_ack_code

#: Crockford's base 32: no I, L, O or U, so no code reads as another, or as a word
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: characters of a code: 30 bits
CODE_LENGTH = 6
#: how long a closed escalation is remembered (a late ``ack`` says what became of it)
CLOSED_MEMORY = 86400.0
#: failed tries a client may make per :data:`FAILED_PERIOD` (then it waits)
FAILED_TRIES = 5
FAILED_PERIOD = 60.0
_READS_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})

AckStatus = Literal["acked", "closed", "unknown", "limited"]


def new_ack_code() -> str:
    """A fresh code: :data:`CODE_LENGTH` characters of :data:`ALPHABET`, from the OS's randomness."""
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(raw: str) -> str | None:
    """A code as typed (``ack:4f2k9m``, `` 4F2K 9M ``, ``4F2KOM``) as stored, or None if it is none."""
    text = raw.strip().upper().removeprefix("ACK:").replace(" ", "").replace("-", "")
    text = text.translate(_READS_AS)
    if len(text) != CODE_LENGTH or any(c not in ALPHABET for c in text):
        return None
    return text


def code_rule() -> str:
    return f"must be the {CODE_LENGTH} characters after 'ack:' in the SMS (letters and digits)"


def key_identity(key: str) -> str:
    """The identity an alert raised with ``key`` escalates under (what ``resolve(key)`` closes).

    The same for every severity of the key: one incident, one escalation.
    """
    return "key:" + hashlib.blake2b(key.encode(), digest_size=10).hexdigest()


def preload_escalations(tx: Tx, alerts: list[str]) -> None:
    """Load the escalations of ``alerts`` in two bulk reads (the intake's round asks per alert)."""
    if not alerts:
        return
    tx.escalation_keys.load(alerts)
    codes = [ref.code for alert in alerts if (ref := tx.escalation_keys.get(alert)) is not None]
    if codes:
        tx.escalations.load(codes)


class _Page(Protocol):
    """What :func:`escalation_page` reads of an alert's hit (:class:`~.decisions.Hit`)."""

    alert_id: str
    resolved: bool
    escalate: tuple[float, tuple[str, ...]] | None


class _Segments(Protocol):
    @property
    def max_segments(self) -> int: ...


def escalation_page(
    tx: Tx, hit: _Page, text: str, *, new: bool, code: Callable[[str, int], str], policy: _Segments
) -> tuple[str, bool]:
    """The intake's step for an alert that pages: a resolve closes its escalation, a page
    that can escalate gets its code (:func:`open_escalation`). Returns the text and
    whether an escalation opened. ``code(alert, attempt)``: stable over reruns (``IdBook.code``)."""
    if hit.resolved:
        resolve_escalation(tx, hit.alert_id)
        return text, False
    return open_escalation(
        tx,
        hit.alert_id,
        text,
        hit.escalate,
        new=new,
        code=lambda attempt: code(hit.alert_id, attempt),
        max_segments=policy.max_segments,
    )


def open_escalation(
    tx: Tx,
    alert: str,
    text: str,
    escalate: tuple[float, tuple[str, ...]] | None,
    *,
    new: bool,
    code: Callable[[int], str],
    max_segments: int,
) -> tuple[str, bool]:
    """The SMS ``text`` of an alert that pages now, with its ack code if it can escalate.

    An escalation still open for ``alert`` lends the SMS its code (a reminder, the alert
    paging again in a new window). Otherwise, if ``new`` and ``escalate`` is
    ``(seconds, phones)``, one is opened. Returns the text and whether one was opened.
    ``code(attempt)``: a code for this alert, the same on a rerun of the transaction.
    """
    now = tx.now
    ref = tx.escalation_keys.get(alert)
    if ref is not None:
        current = tx.escalations.get(ref.code)
        if current is not None and current.state == "open":
            return with_ack_code(text, current.code, max_segments=max_segments), False
    if not new or escalate is None:
        return text, False
    after, numbers = escalate
    attempt = 0
    chosen = code(attempt)
    while tx.escalations.get(chosen) is not None:  # a code alive already: another one
        attempt += 1
        chosen = code(attempt)
    opened = Escalation(chosen, alert, "open", now, after, now + after, text, numbers, "", 0.0)
    tx.escalations.put(chosen, opened)
    tx.escalation_keys.put(alert, EscalationKey(alert, chosen, now + after + CLOSED_MEMORY))
    return with_ack_code(text, chosen, max_segments=max_segments), True


def _close(tx: Tx, escalation: Escalation, state: str, by: str) -> Escalation:
    now = tx.now
    closed = replace(escalation, state=state, at=now + CLOSED_MEMORY, closed_by=by, closed_at=now)
    tx.escalations.put(escalation.code, closed)
    ref = tx.escalation_keys.get(escalation.alert)
    if ref is None or ref.code == escalation.code:  # (a newer escalation of the alert keeps its own)
        tx.escalation_keys.put(escalation.alert, EscalationKey(escalation.alert, escalation.code, closed.at))
    return closed


def resolve_escalation(tx: Tx, alert: str) -> bool:
    """The alert resolved: its open escalation (if any) closes. Whether one did."""
    ref = tx.escalation_keys.get(alert)
    if ref is None:
        return False
    escalation = tx.escalations.get(ref.code)
    if escalation is None or escalation.state != "open":
        return False
    _close(tx, escalation, "resolved", "resolved")
    return True


@dataclass(frozen=True, slots=True)
class AckResult:
    """What an acknowledgement did.

    ``status``: ``acked`` (it was open: nothing more pages), ``closed`` (it was closed
    already: see ``escalation.state``, ``closed_by``), ``unknown`` (no escalation has
    this code: a failed try, counted) or ``limited`` (too many failed tries from this
    client: wait ``retry_after`` seconds; the code was not looked at).
    """

    status: AckStatus
    code: str
    escalation: Escalation | None = None
    retry_after: float = 0.0

    @property
    def ok(self) -> bool:
        """The alert is acknowledged, now or before (nothing more escalates)."""
        return self.status in ("acked", "closed")

    def as_dict(self) -> dict[str, Any]:
        """As the relay answers it and ``ack --json`` prints it."""
        answer: dict[str, Any] = {"status": self.status, "code": self.code}
        escalation = self.escalation
        if escalation is not None:
            answer.update(
                alert=escalation.text,
                state=escalation.state,
                closed_by=escalation.closed_by,
                closed_at=escalation.closed_at,
                escalates_at=escalation.opened_at + escalation.after,
            )
        return answer


def acknowledge(tx: Tx, code: str, client: str) -> AckResult:
    """Acknowledge the escalation of ``code`` (normalised) for ``client`` (the limit's key, and who).

    Failed tries are limited per client (a GCRA of :data:`FAILED_TRIES` per
    :data:`FAILED_PERIOD` in the store's rates table): past it, codes are not even
    looked up until the client's allowance is back.
    """
    now = tx.now
    key = f"ackfail:{client}"
    interval = FAILED_PERIOD / FAILED_TRIES
    tat = max(tx.rates.get(key) or now, now)
    if tat - now > (FAILED_TRIES - 1) * interval:
        return AckResult("limited", code, retry_after=tat - now - (FAILED_TRIES - 1) * interval)
    escalation = tx.escalations.get(code)
    if escalation is None:
        tx.rates.put(key, tat + interval)
        return AckResult("unknown", code)
    if escalation.state != "open":
        return AckResult("closed", code, escalation)
    return AckResult("acked", code, _close(tx, escalation, "acked", client))


def due_escalations(tx: Tx, limit: int) -> list[Escalation]:
    """Open escalations whose time has come, closed as ``escalated`` (the caller pages them);
    closed ones and alert keys past their memory, forgotten."""
    fired: list[Escalation] = []
    codes = tx.due("escalations", limit)
    if codes:
        tx.escalations.load(codes)
        for code in codes:
            escalation = tx.escalations.get(code)
            if escalation is None or escalation.at > tx.now:
                continue
            if escalation.state == "open":
                fired.append(_close(tx, escalation, "escalated", "escalated"))
            else:
                tx.escalations.delete(code)
    alerts = tx.due("escalation_keys", limit)
    if alerts:
        tx.escalation_keys.load(alerts)
        for alert in alerts:
            ref = tx.escalation_keys.get(alert)
            if ref is not None and ref.expires_at <= tx.now:
                tx.escalation_keys.delete(alert)
    return fired
