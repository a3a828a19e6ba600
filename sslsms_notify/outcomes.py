"""The words for what became of an alert, and the exit codes they come to.

One source for every door: a :class:`~sslsms_notify.alerting.notifier.Ticket`'s
``status``, the relay's JSON, ``sslsms-notify send``'s outcome and exit code (and
its ``--help``), the apprise plugin's result and the documentation's tables.

- :class:`Outcome`: what became of one alert. The intake decides the first nine
  (a ticket's ``status``); the rest say what became of its SMS, or why nobody knows.
- :class:`SmsState`: what became of one SMS (:meth:`Notifier.outcomes
  <sslsms_notify.alerting.notifier.Notifier.outcomes>`).
- :class:`ExitCode`: what ``sslsms-notify`` exits with.

Each is a ``StrEnum`` or ``IntEnum``: a value compares equal to its plain word or
number (``Outcome.QUEUED == "queued"``, ``ExitCode.SUPPRESSED == 3``) and prints as it.
Each value's ``meaning`` is a sentence for people; an outcome's ``exit_code`` is the
exit code ``send`` (also with ``--relay``) reports it with.

This module imports nothing of the package: every part of it may import it.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """What ``sslsms-notify`` exits with; ``meaning``: what it means for ``send``.

    ``send`` reports about the SMS its run created, never about others in the outbox.
    Other commands use the same numbers for the same kind of end (``2`` bad input,
    ``6`` a store or gateway that does not answer, ``1`` an internal error).
    """

    DELIVERED = 0
    BAD_INPUT = 2
    SUPPRESSED = 3
    THROTTLED = 4
    AUTH = 5
    UNREACHABLE = 6
    RELAY_UNREACHABLE = 7
    #: Ctrl-C (SIGINT): 128 + 2, as a shell reports a process SIGINT ended
    INTERRUPTED = 130
    ERROR = 1

    @property
    def meaning(self) -> str:
        return _EXIT_MEANINGS[self]


_EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.DELIVERED: "delivered to at least one phone (or, with group_wait, buffered: see below)",
    ExitCode.BAD_INPUT: "rejected input: bad option or configuration, no recipients, no route matching "
    "the alert, empty text, text that is not UTF-8, or every SMS refused by the gateway (dead letters)",
    ExitCode.SUPPRESSED: "suppressed: a repeat inside the dedup window (counted for the summary), "
    "or silenced: an active silence matches it (told when the silence ends)",
    ExitCode.THROTTLED: "held by a per-phone cap, or by the group's quiet hours (it goes out in a digest)",
    ExitCode.AUTH: "credentials refused: the gateway's (exits after one request), or the relay's "
    "(SSLSMS_RELAY_TOKEN) with --relay",
    ExitCode.UNREACHABLE: "not sent yet: the gateway is unreachable, or its rate limit or request quota "
    "(4029) holds it back; the SMS waits in the outbox and the next run sends it",
    ExitCode.RELAY_UNREACHABLE: "with --relay: the relay did not take the alert (nothing was queued)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C): the SMS waits in the outbox; the next run sends it",
    ExitCode.ERROR: "internal error (run with --debug for the traceback)",
}


class Outcome(StrEnum):
    """What became of one alert.

    The intake decides one of the first nine for every alert it takes (a ticket's
    ``status``); the others are what ``send``, ``send --relay``, the relay and the
    apprise plugin report once they know what became of the alert's SMS.
    """

    # -- the intake's decision (Ticket.status) --
    QUEUED = "queued"
    BUFFERED = "buffered"
    SUPPRESSED = "suppressed"
    THROTTLED = "throttled"
    UNROUTED = "unrouted"
    REJECTED = "rejected"
    DROPPED = "dropped"
    SILENCED = "silenced"
    HELD = "held"
    # -- what became of its SMS, or why nobody knows --
    DELIVERED = "delivered"
    FAILED = "failed"
    AUTH_FAILED = "auth_failed"
    RATE_LIMITED = "rate_limited"
    UNREACHABLE = "unreachable"
    UNDECIDED = "undecided"
    RELAY_REFUSED = "relay_refused"
    RELAY_UNREACHABLE = "relay_unreachable"
    INTERRUPTED = "interrupted"
    ERROR = "error"

    @property
    def meaning(self) -> str:
        return _OUTCOME_MEANINGS[self]

    @property
    def exit_code(self) -> ExitCode:
        """The exit code ``send`` reports this outcome with (``1`` for words it never reports)."""
        return _OUTCOME_EXITS.get(self, ExitCode.ERROR)

    @property
    def reported(self) -> bool:
        """Whether ``send`` (also with ``--relay``) reports this outcome (the ``outcome`` of ``--json``)."""
        return self in _OUTCOME_EXITS

    @property
    def decided_by_intake(self) -> bool:
        """One of the nine words a :class:`~sslsms_notify.alerting.notifier.Ticket` says."""
        return self in _INTAKE

    @classmethod
    def exit_code_of(cls, word: str) -> ExitCode:
        """The exit code for an outcome word from elsewhere (a relay's answer); ``1`` if unknown."""
        try:
            return cls(word).exit_code
        except ValueError:
            return ExitCode.ERROR


_INTAKE = frozenset(
    {
        Outcome.QUEUED,
        Outcome.BUFFERED,
        Outcome.SUPPRESSED,
        Outcome.THROTTLED,
        Outcome.UNROUTED,
        Outcome.REJECTED,
        Outcome.DROPPED,
        Outcome.SILENCED,
        Outcome.HELD,
    }
)

_OUTCOME_MEANINGS: dict[Outcome, str] = {
    Outcome.QUEUED: "its SMS are in the outbox (csms_ids); what becomes of each is an SmsState",
    Outcome.BUFFERED: "gathered with the group's other alerts (group_wait)",
    Outcome.SUPPRESSED: "a repeat inside the dedup window; counted for the summary",
    Outcome.THROTTLED: "held by the per-phone cap; it goes out in a digest",
    Outcome.UNROUTED: "no route matches this alert, so nobody was paged",
    Outcome.REJECTED: "bad input (the error names the field and the rule), or every SMS refused by "
    "the gateway (dead letters)",
    Outcome.DROPPED: "not taken: the queue was full, the store refused writes, or the notifier was closed",
    Outcome.SILENCED: "an active silence matches it, so it sends nothing; the SMS that ends the "
    "silence counts it",
    Outcome.HELD: "its groups are in their quiet hours and it is below quiet_min_severity; it goes out "
    "in the digest when they end",
    Outcome.DELIVERED: "the gateway accepted the SMS for at least one phone",
    Outcome.FAILED: "with --relay: the gateway refused every SMS (dead letters in the relay's outbox)",
    Outcome.AUTH_FAILED: "the gateway refused the credentials; the SMS waits in the outbox",
    Outcome.RATE_LIMITED: "the gateway's rate limit or daily request quota (4029) held the SMS back; "
    "it waits in the outbox",
    Outcome.UNREACHABLE: "not sent yet: the gateway did not answer (the SMS waits in the outbox), the "
    "store did not take the alert in time, or the relay's answer was lost (it may have queued the alert)",
    Outcome.UNDECIDED: "the store did not take the alert in time",
    Outcome.RELAY_REFUSED: "with --relay: the relay refused the token (SSLSMS_RELAY_TOKEN)",
    Outcome.RELAY_UNREACHABLE: "with --relay: the relay did not take the alert (nothing was queued)",
    Outcome.INTERRUPTED: "Ctrl-C: the SMS waits in the outbox; the next run sends it",
    Outcome.ERROR: "the alert was dropped (a full queue, or the pipeline closing), or a relay answered "
    "with an outcome this version does not know",
}

#: what send (also with --relay) exits with for each outcome it reports; it reports no other
#: (a dropped alert is an "error", one the store did not take in time "unreachable")
_OUTCOME_EXITS: dict[Outcome, ExitCode] = {
    Outcome.DELIVERED: ExitCode.DELIVERED,
    Outcome.BUFFERED: ExitCode.DELIVERED,
    Outcome.REJECTED: ExitCode.BAD_INPUT,
    Outcome.UNROUTED: ExitCode.BAD_INPUT,
    Outcome.FAILED: ExitCode.BAD_INPUT,
    Outcome.SUPPRESSED: ExitCode.SUPPRESSED,
    Outcome.SILENCED: ExitCode.SUPPRESSED,
    Outcome.THROTTLED: ExitCode.THROTTLED,
    Outcome.HELD: ExitCode.THROTTLED,
    Outcome.AUTH_FAILED: ExitCode.AUTH,
    Outcome.RELAY_REFUSED: ExitCode.AUTH,
    Outcome.UNREACHABLE: ExitCode.UNREACHABLE,
    Outcome.RATE_LIMITED: ExitCode.UNREACHABLE,
    Outcome.RELAY_UNREACHABLE: ExitCode.RELAY_UNREACHABLE,
    Outcome.INTERRUPTED: ExitCode.INTERRUPTED,
    Outcome.ERROR: ExitCode.ERROR,
}


class SmsState(StrEnum):
    """What became of one SMS, as far as the outbox tells."""

    DELIVERED = "delivered"
    PENDING = "pending"
    FAILED = "failed"

    @property
    def meaning(self) -> str:
        return _SMS_MEANINGS[self]


_SMS_MEANINGS: dict[SmsState, str] = {
    SmsState.DELIVERED: "the gateway accepted it (a sent SMS leaves the outbox)",
    SmsState.PENDING: "in the outbox, still to send (in flight included)",
    SmsState.FAILED: "given up on: a dead letter in the outbox",
}
