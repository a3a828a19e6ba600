"""Counters a pipeline keeps; ``Notifier.stats()`` returns a snapshot."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Final, Literal


@dataclass
class Stats:
    #: alerts handed to ``alert()``
    received: int = 0
    #: of ``received``, repeats counted on the producer's thread instead of being queued
    coalesced: int = 0
    #: alerts the bounded queue had no room for, or raised after close()
    dropped: int = 0
    #: alerts that could not be routed or formatted (bad input)
    rejected: int = 0
    #: alerts no configured route matched: nobody was paged (see Router)
    unrouted: int = 0
    #: repeats held back by a dedup window (webhook re-sends included)
    suppressed: int = 0
    #: webhook re-sends of an alert already paged in its lifecycle: nothing new, no SMS
    resent: int = 0
    #: reminders of webhook alerts still firing (``remind_every``)
    reminders: int = 0
    #: "+N more since HH:MM" summaries produced when a window closed with repeats
    summaries: int = 0
    #: alerts an active silence held (they send nothing; the silence's end SMS counts them)
    silenced: int = 0
    #: alerts a group's quiet hours held (they go out in the group's digest when they end)
    quiet_held: int = 0
    #: SMS that ended a hold: "[SILENCE ENDED] ..." and "[QUIET HOURS ...]", one per group
    hold_summaries: int = 0
    #: SMS held back by a recipient's cap
    throttled: int = 0
    #: held SMS that went out inside a digest
    folded: int = 0
    #: digest SMS produced
    digests: int = 0
    #: SMS the gateway accepted (or had accepted: duplicate id on a retry)
    sent: int = 0
    #: SMS given up on (invalid or blocked number, or too old): dead letters
    failed: int = 0
    #: SMS attempts after the first, and client-side request retries
    retried: int = 0
    #: HTTP requests made to the gateway
    requests: int = 0
    #: bulk/dynamic requests that failed as a whole and were resent as singles
    fallbacks: int = 0
    #: dedup windows closed early to stay within ``max_windows``
    evicted: int = 0
    #: pending SMS made dead letters to stay within ``max_pending``
    outbox_dropped: int = 0
    #: SMS still undelivered when a notifier on a memory store closed
    lost: int = 0
    #: alerts paged with an ack code: they escalate unless acknowledged or resolved in time
    escalations: int = 0
    #: ``[ESCALATED ...]`` pages: alerts nobody acknowledged or resolved in time
    escalated: int = 0
    #: escalations acknowledged through this process
    acked: int = 0
    #: acknowledgements refused: a code that is no code, unknown, or a client over its limit
    ack_refused: int = 0
    #: ``[MISSED]`` pages: heartbeats (and watchdogs) silent past their deadline
    heartbeats_missed: int = 0
    #: ``[RECOVERED]`` pages: missed heartbeats that pinged again
    heartbeats_recovered: int = 0
    #: messages told to the fallback channel (a state change of the SMS path each)
    fallback_told: int = 0
    #: of ``sent``, SMS the second gateway account took (``[gateway.secondary]``)
    secondary: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_lock"}

    def reset_lock(self) -> None:
        self._lock = threading.Lock()


#: every key of ``Notifier.stats()``, in its order: ``counter`` (since the notifier
#: started) or ``backlog`` (waiting when stats() is called), and what it counts. The
#: documentation renders this table; a test checks it names exactly the keys stats() returns.
STATS_KEYS: Final[Mapping[str, tuple[Literal["counter", "backlog"], str]]] = MappingProxyType(
    {
        "received": ("counter", "alerts handed to ``alert()``"),
        "coalesced": (
            "counter",
            "of ``received``, repeats counted on the producer's thread instead of being queued",
        ),
        "dropped": ("counter", "alerts the bounded queue had no room for, or raised after close()"),
        "rejected": ("counter", "alerts that could not be routed or formatted (bad input)"),
        "unrouted": ("counter", "alerts no configured route matched: nobody was paged (see Router)"),
        "suppressed": ("counter", "repeats held back by a dedup window (webhook re-sends included)"),
        "resent": (
            "counter",
            "webhook re-sends of an alert already paged in its lifecycle: nothing new, no SMS",
        ),
        "reminders": ("counter", "reminders of webhook alerts still firing (``remind_every``)"),
        "summaries": (
            "counter",
            '"+N more since HH:MM" summaries produced when a window closed with repeats',
        ),
        "silenced": (
            "counter",
            "alerts an active silence held (they send nothing; the silence's end SMS counts them)",
        ),
        "quiet_held": (
            "counter",
            "alerts a group's quiet hours held (they go out in the group's digest when they end)",
        ),
        "hold_summaries": (
            "counter",
            'SMS that ended a hold: "[SILENCE ENDED] ..." and "[QUIET HOURS ...]", one per group',
        ),
        "throttled": ("counter", "SMS held back by a recipient's cap"),
        "folded": ("counter", "held SMS that went out inside a digest"),
        "digests": ("counter", "digest SMS produced"),
        "sent": ("counter", "SMS the gateway accepted (or had accepted: duplicate id on a retry)"),
        "failed": ("counter", "SMS given up on (invalid or blocked number, or too old): dead letters"),
        "retried": ("counter", "SMS attempts after the first, and client-side request retries"),
        "requests": ("counter", "HTTP requests made to the gateway"),
        "fallbacks": ("counter", "bulk/dynamic requests that failed as a whole and were resent as singles"),
        "evicted": ("counter", "dedup windows closed early to stay within ``max_windows``"),
        "outbox_dropped": ("counter", "pending SMS made dead letters to stay within ``max_pending``"),
        "lost": (
            "counter",
            "at close: alerts the store never took, and SMS a memory store still held (not those "
            "whose request was abandoned mid-way: they may have been delivered)",
        ),
        "escalations": (
            "counter",
            "alerts paged with an ack code: they escalate unless acknowledged or resolved in time",
        ),
        "escalated": ("counter", "``[ESCALATED ...]`` pages: alerts nobody acknowledged or resolved in time"),
        "acked": ("counter", "escalations acknowledged through this process"),
        "ack_refused": (
            "counter",
            "acknowledgements refused: a code that is no code, unknown, or a client over its limit",
        ),
        "heartbeats_missed": (
            "counter",
            "``[MISSED]`` pages: heartbeats (and watchdogs) silent past their deadline",
        ),
        "heartbeats_recovered": ("counter", "``[RECOVERED]`` pages: missed heartbeats that pinged again"),
        "fallback_told": (
            "counter",
            "messages told to the fallback channel (a state change of the SMS path each)",
        ),
        "secondary": (
            "counter",
            "of ``sent``, SMS the second gateway account took (``[gateway.secondary]``)",
        ),
        "dropped_closed": ("counter", "of ``dropped``: raised after the notifier was closed"),
        "dropped_store_refused": (
            "counter",
            "of ``dropped``: the queue was full because the store refused writes",
        ),
        "held": ("backlog", "alerts the store refused, held in memory and retried until it takes them"),
        "queued": ("backlog", "alerts waiting for the intake thread"),
        "pending": ("backlog", "SMS in the outbox still to send (in flight included)"),
        "dead": ("backlog", "dead letters kept in the outbox"),
        "windows": ("backlog", "open dedup windows"),
    }
)
