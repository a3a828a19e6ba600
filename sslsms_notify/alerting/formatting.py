"""What a phone shows: short, tagged, within the segment budget, and never ambiguous.

One wording for counts everywhere (SMS, digests, the demo):

- an alert: ``[CRIT] db1/app.db: Disk full``
- a summary of repeats: ``[CRIT +39 more since 18:32] db1/app.db: Disk full (last 18:39)``:
  39 more occurrences after the SMS the phone got at 18:32, the last at 18:39;
- a digest of what a per-phone cap held back:
  ``[digest: 12 held since 10:02] [ERROR] db1: x | [CRIT] db2: y | +10 more``;
- alerts gathered by ``group_wait``: ``[3 alerts] [ERROR] a | [ERROR] b | [WARN] c``;
- an alert that resolved (relay webhooks): ``[RESOLVED] alertmanager/sms: DiskFull (db1): ...``;
- what a silence or quiet hours held, when they end:
  ``[SILENCE ENDED] db migration: 40 alerts held (2 kinds): [CRIT] ... | [ERROR] ...``;
- a reminder of a webhook alert still firing (only when configured):
  ``[CRIT still firing since 02:10] alertmanager/sms: DiskFull (db1): ...``;
- an alert that escalates unless acknowledged ends with its code:
  ``[CRIT] db1/app.db: Disk full ack:4F2K9M``; its escalation:
  ``[ESCALATED 15m] [CRIT] db1/app.db: Disk full``;
- a heartbeat's silence and return: ``[MISSED] backup: no heartbeat since 02:00 (every
  24h)``, ``[RECOVERED] backup: heartbeat at 03:10 (silent since 02:00, every 24h)``;
  a watchdog's: ``[MISSED] monitoring: Alertmanager silent since 02:00``.

Times are the local time of the process that formats the SMS (set ``TZ``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import lru_cache

from ..durations import format_duration
from ..gateway.clean import clean_text
from ..gateway.text import ellipsis_for, encoding_of, fits, truncate_to_segments
from .alert import Severity

DEFAULT_MAX_SEGMENTS = 2
_SEPARATOR = " | "


def clock_time(timestamp: float) -> str:
    return time.strftime("%H:%M", time.localtime(timestamp))


def _fit(head: str, body: str, tail: str, max_segments: int) -> str:
    """``head + body + tail``, cutting only the body, never the head or tail."""
    whole = head + body + tail
    if fits(whole, max_segments):
        return whole
    marker = ellipsis_for(encoding_of(whole)) + tail
    # The whole text, not head + body: those alone may fit, and must still make room for the
    # tail (the cut never reaches into the tail: what is kept is shorter than head + body).
    return truncate_to_segments(whole, max_segments, marker=marker)


def format_parts(
    severity: Severity, host: str, source: str, text: str, max_segments: int, *, resolved: bool = False
) -> str:
    """``[CRIT] db1/app.db: Disk full`` within ``max_segments`` SMS, from an alert's parts.

    ``resolved``: an all-clear, tagged ``[RESOLVED]`` rather than with the firing severity.
    """
    origin = _origin(host, source)
    tag = "RESOLVED" if resolved else severity.tag
    head = f"[{tag}] {origin}: " if origin else f"[{tag}] "
    return _fit(head, text, "", max_segments)


@lru_cache(maxsize=1024)
def _origin(host: str, source: str) -> str:
    """``host/source`` on one line, cleaned like a text (a logger name or host is input too)."""
    origin = f"{host}/{source}" if host and source else host or source
    return " ".join(clean_text(origin).split()) if origin else ""


def format_reminder(text: str, since_at: float, *, max_segments: int) -> str:
    """``[CRIT still firing since 02:10] origin: body`` from an alert's formatted SMS."""
    tag, sep, body = text.partition("] ")
    since = f"still firing since {clock_time(since_at)}]"
    if not tag.startswith("[") or not sep:
        return _fit(f"[{since} ", text, "", max_segments)
    return _fit(f"{tag} {since} ", body, "", max_segments)


def format_summary(
    severity: Severity, text: str, count: int, since_at: float, last_at: float, *, max_segments: int
) -> str:
    """``[CRIT +37 more since 10:02] db1/app.db: Disk full (last 10:42)``.

    ``text`` is the last repeat as formatted for a phone (``[TAG] origin: body``);
    ``since_at`` is when the phone got the previous SMS about this alert.
    """
    prefix = f"[{severity.tag}] "
    body = text.removeprefix(prefix)
    since, last = clock_time(since_at), clock_time(last_at)
    head = f"[{severity.tag} +{count} more since {since}] "
    return _fit(head, body, f" (last {last})" if last != since else "", max_segments)


def _joined(head: str, texts: Sequence[str], total: int, max_segments: int) -> str:
    """``head`` then as many texts as fit, then ``+N more`` for the rest of ``total``."""
    shown: list[str] = []
    for text in texts:
        rest = total - len(shown) - 1
        candidate = head + _SEPARATOR.join([*shown, text]) + (f"{_SEPARATOR}+{rest} more" if rest else "")
        if not fits(candidate, max_segments):
            break
        shown.append(text)
    if not shown:
        return _fit(head, texts[0], f"{_SEPARATOR}+{total - 1} more" if total > 1 else "", max_segments)
    rest = total - len(shown)
    return head + _SEPARATOR.join(shown) + (f"{_SEPARATOR}+{rest} more" if rest else "")


def format_group(texts: Sequence[str], count: int | None = None, *, max_segments: int) -> str:
    """Several distinct alerts for one group in one SMS (``group_wait``).

    ``texts`` are the first ones kept; ``count`` how many there were in all.
    """
    total = len(texts) if count is None else max(count, len(texts))
    if total == 1:
        return texts[0]
    return _joined(f"[{total} alerts] ", texts, total, max_segments)


def format_digest(
    texts: Sequence[str], count: int | None = None, since_at: float | None = None, *, max_segments: int
) -> str:
    """What a recipient's cap held back, folded into one SMS: the count and the first texts."""
    total = len(texts) if count is None else max(count, len(texts))
    since = f" since {clock_time(since_at)}" if since_at is not None else ""
    return _joined(f"[digest: {total} held{since}] ", list(dict.fromkeys(texts)), total, max_segments)


def with_ack_code(text: str, code: str, *, max_segments: int) -> str:
    """``text`` ending with `` ack:CODE``, within ``max_segments`` (the text is cut, never the code)."""
    return _fit("", text, f" ack:{code}", max_segments)


def format_escalated(text: str, after: float, *, max_segments: int) -> str:
    """``[ESCALATED 15m] [CRIT] db1/app.db: Disk full``: nobody acknowledged it in ``after`` seconds."""
    return _fit(f"[ESCALATED {format_duration(after)}] ", text, "", max_segments)


#: a watchdog heartbeat's kind -> the system whose silence it is
WATCHDOGS = {"alertmanager": "Alertmanager", "grafana": "Grafana"}


def _since(timestamp: float, now: float) -> str:
    """``02:00``, or ``Tue 02:00`` when that is most of a day ago or more."""
    if now - timestamp < 20 * 3600:
        return clock_time(timestamp)
    return time.strftime("%a %H:%M", time.localtime(timestamp))


def format_missed(
    name: str, kind: str, last_ping: float, every: float, now: float, *, max_segments: int
) -> str:
    """``[MISSED] backup: no heartbeat since 02:00 (every 24h)``, or a watchdog's silence."""
    since = _since(last_ping, now)
    if kind in WATCHDOGS:
        return _fit("[MISSED] monitoring: ", f"{WATCHDOGS[kind]} silent since {since}", "", max_segments)
    return _fit(
        "[MISSED] ", f"{name}: no heartbeat since {since} (every {format_duration(every)})", "", max_segments
    )


def format_recovered(
    name: str, kind: str, last_ping: float, now: float, every: float, *, max_segments: int
) -> str:
    """``[RECOVERED] backup: heartbeat at 03:10 (silent since 02:00, every 24h)``."""
    at, since = clock_time(now), _since(last_ping, now)
    if kind in WATCHDOGS:
        body = f"{WATCHDOGS[kind]} heard again at {at} (silent since {since})"
        return _fit("[RECOVERED] monitoring: ", body, "", max_segments)
    body = f"{name}: heartbeat at {at} (silent since {since}, every {format_duration(every)})"
    return _fit("[RECOVERED] ", body, "", max_segments)


def format_held(head: str, texts: Sequence[str], total: int, *, max_segments: int) -> str:
    """What a silence or a group's quiet hours held, in one SMS: ``head``, then the first
    texts and ``+N more`` for the rest of ``total`` distinct alerts."""
    if not texts:
        return head.rstrip(": ")
    return _joined(head, list(texts), max(total, len(texts)), max_segments)
