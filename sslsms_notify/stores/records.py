"""The on-call record tables: heartbeats, escalations, what the fallback channel was told,
SMS handed to a second gateway account; silences, and what a silence or a group's quiet
hours held.

Small typed rows, each with a time index, kept alike by every store (see
:data:`~.base.RECORDS`, which maps each table to its row type); the decisions that
read and write them are in :mod:`sslsms_notify.alerting` (``heartbeats``, ``escalation``,
``fallback``, ``failover``, ``silences``, ``holds``). A row's first field is its key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A dead man's switch: something that must ping every ``every`` seconds (plus ``grace``).

    A cron job (``sslsms-notify heartbeat backup --every 24h``), or a monitoring system's
    always-firing alert (``kind`` ``"alertmanager"`` or ``"grafana"``: the relay's
    watchdog). ``due_at`` is when its silence pages ``[MISSED]`` (last ping + every +
    grace); once that paged (``missed_at``), it is when the record is looked at again.
    ``numbers`` are the phones of ``groups`` as the last ping resolved them, so any
    process on the store can page them.
    """

    name: str
    every: float
    grace: float
    last_ping: float
    due_at: float
    #: when ``[MISSED]`` paged (0: it has not; the heartbeat is alive)
    missed_at: float
    #: "" for a heartbeat a job pings; "alertmanager" or "grafana" for a watchdog alert
    kind: str
    groups: tuple[str, ...]
    numbers: tuple[str, ...]
    created_at: float


@dataclass(frozen=True, slots=True)
class Escalation:
    """One alert that escalates unless acknowledged or resolved in time, keyed by its ack code.

    ``alert`` is the alert's identity (a webhook lifecycle, else its fingerprint);
    ``state`` is ``open`` (``at``: when it escalates), then ``acked``, ``resolved`` or
    ``escalated`` (``at``: when the record is forgotten).
    """

    code: str
    alert: str
    state: str
    opened_at: float
    after: float
    at: float
    #: the alert's SMS, without its code: what the escalation pages
    text: str
    #: the escalation groups' phones
    numbers: tuple[str, ...]
    #: who closed it (``cli``, ``relay 10.0.0.7``, ``library``, ``resolved``) and when
    closed_by: str
    closed_at: float


@dataclass(frozen=True, slots=True)
class EscalationKey:
    """An alert's identity to its ack code (a resolve finds its escalation by the alert)."""

    alert: str
    code: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Notice:
    """What the fallback channel was told, shared so that several processes tell it once.

    ``state``: ``ok``, ``auth`` (credentials refused) or ``stuck`` (SMS waiting past
    ``fallback_after``), since ``since``. ``queue`` holds messages decided and not yet
    told; a process tells them under a lease (``lease_until``, ``owner``).
    ``dead_kinds``: kinds of dead letters told since the outbox last held none.
    """

    key: str
    state: str
    since: float
    detail: str
    dead_kinds: tuple[str, ...]
    queue: tuple[str, ...]
    owner: str
    lease_until: float
    told: int
    #: the time index: far ahead (housekeeping reads the record; no sweep needs it)
    at: float


@dataclass(frozen=True, slots=True)
class Handoff:
    """An SMS handed to the second gateway account: it is never sent through the first again.

    Written before the first request to the second account carries it, and kept while
    the SMS may be in the outbox (``expires_at``).
    """

    csms_id: str
    account: str
    at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Silence:
    """Alerts matching every one of ``matchers`` send nothing until ``ends_at``.

    ``matchers`` are kept as written back (``alertname="DiskFull"``; see
    :mod:`sslsms_notify.alerting.silences`); ``groups`` are the groups it has held
    alerts for so far, whose :class:`Hold` rows (``silence_hold_key``) tell what it held.
    """

    key: str
    matchers: tuple[str, ...]
    comment: str
    created_at: float
    ends_at: float
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Hold:
    """What a silence or a group's quiet hours held back for one group, told in one SMS at ``ends_at``.

    ``kind`` is ``"silence"`` (``label``: the silence's comment, else its matchers) or
    ``"quiet"`` (``label``: the period, ``22:00-08:00``). ``count`` counts the alerts
    held; ``kinds`` names the distinct alerts among them (bounded: ``kinds_over`` says
    there were more), ``texts`` the first SMS text of the first few of them, in that
    order; ``events`` the webhook notifications already counted (an Alertmanager
    re-send of one is no new alert). ``numbers`` are kept so that any process on the
    store can send the SMS.
    """

    key: str
    kind: str
    label: str
    ends_at: float
    count: int
    since_at: float
    kinds: tuple[str, ...]
    texts: tuple[str, ...]
    events: tuple[str, ...]
    numbers: tuple[str, ...]
    #: the highest severity held (an int, as :class:`~sslsms_notify.alerting.alert.Severity`)
    severity: int = 0
    kinds_over: bool = False
