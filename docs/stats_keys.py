"""STATS_KEYS, the declaration of ``Notifier.stats()`` that belongs in sslsms_notify/alerting/stats.py.

That module is being rewritten on another branch, so the declaration waits here:
docs/hooks.py reads ``sslsms_notify.alerting.stats.STATS_KEYS`` and falls back to this
file only while that name does not exist. To move it: paste everything from ``from
collections.abc`` down into alerting/stats.py (after the Stats class; its ``#:``
comments may then go), and delete this file.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

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
        "lost": ("counter", "SMS still undelivered when a notifier on a memory store closed"),
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
