"""Log messages rendered on the intake thread, from what the queue keeps of a log record.

A queued log record is the plain tuple ``(LOG_RECORD, msg, args, exc_info)``,
not the record itself: a record weighs about a kilobyte with its ``__dict__``,
and a tuple of strings and numbers is one the garbage collector stops
tracking, so a burst of queued records costs a full collection nothing.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

#: marks a queued ``(LOG_RECORD, msg, args, exc_info)`` tuple
LOG_RECORD = "\x00log-record"


def render_message(msg: object, args: Any, exc_info: Any) -> str:
    """``msg % args``, plus ``(ExcType: detail at file.py:12 in func)`` for an exception."""
    message = str(msg)
    if args:
        message = message % args
    if exc_info and exc_info[1] is not None:
        exc = exc_info[1]
        where = ""
        frames = traceback.extract_tb(exc_info[2]) if exc_info[2] is not None else []
        if frames:
            last = frames[-1]
            where = f" at {os.path.basename(last.filename)}:{last.lineno} in {last.name}"
        detail = str(exc)
        detail = f": {detail}" if detail else ""
        message = f"{message} ({type(exc).__name__}{detail}{where})"
    return message


def render(raw: Any) -> str:
    """A queued alert's text: a string, a queued log record, or a callable that renders one."""
    if type(raw) is str:
        return raw
    if type(raw) is tuple and raw and raw[0] == LOG_RECORD:
        return render_message(raw[1], raw[2], raw[3])
    if callable(raw):
        return str(raw())
    return str(raw)
