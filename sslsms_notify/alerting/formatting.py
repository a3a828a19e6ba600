"""What a phone shows: short, tagged, and within the segment budget."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..gateway.text import ellipsis_for, encoding_of, fits, truncate_to_segments
from .alert import Alert, Severity

DEFAULT_MAX_SEGMENTS = 2


def _clock_time(timestamp: float) -> str:
    return time.strftime("%H:%M", time.localtime(timestamp))


def _origin(alert: Alert) -> str:
    parts = [p for p in (alert.host, alert.source) if p]
    return "/".join(parts)


def _fit(head: str, body: str, tail: str, max_segments: int) -> str:
    """``head + body + tail``, cutting only the body, never the head or tail."""
    whole = head + body + tail
    if fits(whole, max_segments):
        return whole
    marker = ellipsis_for(encoding_of(whole)) + tail
    return truncate_to_segments(head + body, max_segments, marker=marker)


def format_alert(alert: Alert, *, max_segments: int = DEFAULT_MAX_SEGMENTS) -> str:
    """``[CRIT] db1/app.db: Disk full`` within ``max_segments`` SMS."""
    origin = _origin(alert)
    head = f"[{alert.severity.tag}] " + (f"{origin}: " if origin else "")
    return _fit(head, alert.text, "", max_segments)


def format_summary(severity: Severity, text: str, count: int, last_at: float, *, max_segments: int) -> str:
    """``[CRIT x37] db1/app.db: Disk full (last 10:42)`` — repeats a dedup window held back.

    ``text`` is the last repeat as formatted for a phone (``[TAG] origin: body``).
    """
    prefix = f"[{severity.tag}] "
    body = text.removeprefix(prefix) if text.startswith(prefix) else text
    head = f"[{severity.tag} x{count}] "
    return _fit(head, body, f" (last {_clock_time(last_at)})", max_segments)


def format_group(texts: Sequence[str], *, max_segments: int) -> str:
    """Several distinct alerts for one group in one SMS (``group_wait``)."""
    if len(texts) == 1:
        return texts[0]
    head = f"{len(texts)} alerts: "
    shown: list[str] = []
    for position, text in enumerate(texts):
        rest = len(texts) - position - 1
        candidate = head + " | ".join([*shown, text]) + (f" | +{rest} more" if rest else "")
        if not fits(candidate, max_segments):
            break
        shown.append(text)
    if not shown:
        return _fit(head, texts[0], f" | +{len(texts) - 1} more", max_segments)
    rest = len(texts) - len(shown)
    return head + " | ".join(shown) + (f" | +{rest} more" if rest else "")


def format_digest(texts: Sequence[str], *, max_segments: int) -> str:
    """Alerts a recipient's cap held back, folded into one SMS."""
    head = f"[digest] {len(texts)} held: "
    unique = list(dict.fromkeys(texts))
    shown: list[str] = []
    for text in unique:
        candidate = head + " | ".join([*shown, text])
        if not fits(candidate, max_segments):
            break
        shown.append(text)
    if not shown:
        return _fit(head, unique[0], "", max_segments)
    rest = len(unique) - len(shown)
    return head + " | ".join(shown) + (f" | +{rest} more" if rest else "")
