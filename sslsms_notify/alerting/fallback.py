"""The fallback channel: when the SMS path itself fails, someone hears of it another way.

``fallback = ["mailto://...", "tgram://..."]`` (any apprise URLs) is told, once and with
a summary, when the SMS path changes state:

- ``auth``: the gateway refuses the credentials (4001-4003; spec 3.1: "Unauthorized",
  "SID/Stakeholder is not permitted", "IP Blacklisted");
- ``stuck``: SMS have waited in the outbox longer than ``fallback_after`` (default 10
  minutes) while the gateway fails (down, unreachable, refusing requests);
- back to ``ok``: a request got through again: "recovered";
- and, apart from those states, when SMS become dead letters: once per kind of reason
  (an invalid number, expired, the outbox full...), and not again until the outbox holds
  no dead letter (retried or purged).

Never one message per SMS, nor per process: the state, and what was told, is a store
record (:class:`~..stores.records.Notice`) that every process on the store shares. A
process's dispatcher gathers evidence (:class:`Watch`: requests that got through or
failed, credentials refused, dead letters, each with the store's time); once a second
its housekeeping decides in one transaction whether the state changed, queues the
message in the record, and takes a lease on telling it. A thread of its own then tells
apprise (the network never holds the intake), and a second transaction takes the
message off the queue. A process that dies before telling leaves the message queued:
once the lease runs out, another one tells it. Evidence older than the record's last
change is ignored, so a process that saw the gateway fail before another saw it
recover cannot flip the state back.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from .._log import get_logger
from ..extras import require
from ..stores.base import Store, Tx
from ..stores.records import Notice
from ..validation import mask_credentials
from .formatting import clock_time

_log = get_logger("sslsms_notify.fallback")
KEY = "fallback"
#: how long a process may take to tell a message before another may tell it instead
TELL_LEASE = 60.0
#: after apprise failed to tell, how long before it is tried again (by any process)
TELL_RETRY = 30.0
#: a notice's time index: far ahead (housekeeping reads the record; nothing sweeps it)
_FAR = 100 * 365 * 86400.0
#: messages queued at most (more would mean apprise has failed for a long time)
MAX_QUEUE = 20


def dead_kind(reason: str) -> str:
    """The kind of a dead letter's reason, as the fallback channel is told it (once per kind)."""
    text = reason.lower()
    for words, kind in (
        (("outbox full",), "dropped: the outbox was full"),
        (("expired",), "expired: not delivered within max_age"),
        (("already used today", "duplicate"), "the gateway said its id was used already"),
        (("invalid", "blocked"), "the gateway refused the number (invalid or blocked)"),
        (("refused before sending",), "refused before sending (a bad number, id or text)"),
    ):
        if any(w in text for w in words):
            return kind
    return "given up"


@dataclass
class Watch:
    """What this process's dispatcher saw, until housekeeping reads it (:meth:`take`).

    Times are the store's (``Store.now()``), as the shared record's are, and a request's
    is when it left: requests of several processes in flight across a recovery are then
    ordered as the gateway took them (a refusal answered late does not flip it back).
    """

    ok_at: float = 0.0
    auth_at: float = 0.0
    auth_error: str = ""
    failed_at: float = 0.0
    failed_error: str = ""
    #: the oldest SMS in a request that failed since the last one that got through
    failing_since: float | None = None
    dead: list[tuple[float, str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def request_ok(self, at: float) -> None:
        with self._lock:
            self.ok_at = max(self.ok_at, at)
            self.failing_since = None

    def request_failed(self, at: float, oldest_created: float, error: str) -> None:
        with self._lock:
            self.failed_at, self.failed_error = at, error
            if self.failing_since is None or oldest_created < self.failing_since:
                self.failing_since = oldest_created

    def auth_refused(self, at: float, error: str) -> None:
        with self._lock:
            self.auth_at, self.auth_error = at, error

    def dead_letter(self, at: float, reason: str) -> None:
        with self._lock:
            if len(self.dead) < 100:
                self.dead.append((at, dead_kind(reason), reason))

    def take(self, now: float, fallback_after: float) -> list[tuple[float, str, str]]:
        """Events since the last look, in time order: ``(at, kind, detail)``; kinds ``ok``,
        ``auth``, ``stuck`` (SMS failing for ``fallback_after``) and ``dead:<kind>``."""
        with self._lock:
            events: list[tuple[float, str, str]] = []
            if self.ok_at:
                events.append((self.ok_at, "ok", ""))
            if self.auth_at:
                events.append((self.auth_at, "auth", self.auth_error))
            failing = self.failing_since
            if failing is not None and self.failed_at > self.ok_at and now - failing >= fallback_after:
                events.append((self.failed_at, "stuck", f"{self.failed_error}|{failing}"))
            events += [(at, f"dead:{kind}", reason) for at, kind, reason in self.dead]
            self.ok_at = self.auth_at = 0.0
            self.dead = []
        return sorted(events)

    def reset_lock(self) -> None:
        self._lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Situation:
    """What a message says besides the state: where, which account, the backlog."""

    host: str
    sid: str
    pending: int
    dead: int
    #: a second gateway account carries the SMS while the first fails (see .failover)
    secondary: bool = False


def _message(title: str, body: str) -> str:
    return json.dumps([title, body], ensure_ascii=False)


def _state_message(state: str, detail: str, at: float, before: Notice, where: Situation) -> str:
    origin = f"host {where.host}, SID {where.sid}"
    waiting = f"{where.pending} SMS {'waits' if where.pending == 1 else 'wait'} in the outbox"
    meanwhile = "The second gateway account carries the SMS meanwhile. " if where.secondary else ""
    if state == "auth":
        held = meanwhile or "No SMS goes out through it until it accepts them again. "
        return _message(
            "sslsms-notify: the SMS gateway refuses our credentials",
            f"The gateway refused the credentials at {clock_time(at)} ({origin}): {detail}. {held}"
            f"{waiting}. Check the API token, the SID and this host's IP address with SSL Wireless.",
        )
    if state == "stuck":
        error, _, since = detail.rpartition("|")
        title = "the SMS gateway fails" if where.secondary else "SMS are not going out"
        return _message(
            f"sslsms-notify: {title}",
            f"SMS have waited since {clock_time(float(since))} and the gateway still fails ({origin}): "
            f"{error}. {meanwhile}{waiting}; they are retried and go out when it answers.",
        )
    was = {"auth": "refused our credentials", "stuck": "failed"}.get(before.state, before.state)
    return _message(
        "sslsms-notify: SMS go out again",
        f"The gateway takes our SMS again since {clock_time(at)} ({origin}); it {was} from "
        f"{clock_time(before.since)}. {waiting}.",
    )


def _dead_message(kind: str, reason: str, where: Situation) -> str:
    return _message(
        "sslsms-notify: SMS given up",
        f"An SMS became a dead letter (host {where.host}, SID {where.sid}): {kind} ({reason}). "
        f"{where.dead} dead letters in the outbox: 'sslsms-notify outbox list --state dead', "
        "'sslsms-notify outbox retry'. Said once per kind of reason until the outbox holds none.",
    )


def decide(tx: Tx, events: Sequence[tuple[float, str, str]], where: Situation, owner: str) -> list[str]:
    """Apply this process's evidence to the shared state; returns the messages this process
    is to tell now (under the lease it took), or [] (nothing to tell, or another tells it)."""
    now = tx.now
    notice = tx.notices.get(KEY) or Notice(KEY, "ok", 0.0, "", (), (), "", 0.0, 0, now + _FAR)
    before = notice
    queued = list(notice.queue)
    kinds = list(notice.dead_kinds)
    for at, kind, detail in events:
        if kind.startswith("dead:"):
            dead = kind.removeprefix("dead:")
            if dead not in kinds:
                kinds.append(dead)
                queued.append(_dead_message(dead, detail, where))
            continue
        if at <= notice.since:
            continue  # older than the last change: another process knew better already
        if (
            (kind == "ok" and notice.state != "ok")
            or (kind == "auth" and notice.state != "auth")
            or (kind == "stuck" and notice.state == "ok")
        ):
            queued.append(_state_message(kind, detail, at, notice, where))
            notice = replace(notice, state=kind, since=at, detail=detail[:500])
    if where.dead == 0 and kinds and not any(k.startswith("dead:") for _, k, _ in events):
        kinds = []  # the outbox holds no dead letter: the next one is told again
    notice = replace(notice, queue=tuple(queued[-MAX_QUEUE:]), dead_kinds=tuple(kinds))
    tell: list[str] = []
    if notice.queue and notice.lease_until <= now:
        tell = list(notice.queue)
        notice = replace(notice, owner=owner, lease_until=now + TELL_LEASE)
    if notice != before:
        tx.notices.put(KEY, notice)
    return tell


def told(tx: Tx, owner: str, messages: Sequence[str], ok: bool) -> None:
    """After telling (``ok``) or failing to: take the messages off the queue, or let the
    lease run out sooner for a retry."""
    notice = tx.notices.get(KEY)
    if notice is None or notice.owner != owner:
        return  # the lease ran out and another process took it over
    if ok:
        count = len(messages) if notice.queue[: len(messages)] == tuple(messages) else 0
        notice = replace(
            notice, queue=notice.queue[count:], told=notice.told + count, owner="", lease_until=0.0
        )
    else:
        notice = replace(notice, owner="", lease_until=tx.now + TELL_RETRY)
    tx.notices.put(KEY, notice)


def apprise_for(urls: Sequence[str]) -> Any:
    """An ``apprise.Apprise`` that tells ``urls``.

    Raises :class:`~..extras.MissingExtra` when apprise is not installed, and ValueError
    naming the first URL apprise does not understand (credentials masked).
    """
    apprise = require("apprise").Apprise()
    for index, url in enumerate(urls):
        if not apprise.add(url):
            raise ValueError(
                f"fallback[{index}]={mask_credentials(url)!r}: apprise does not understand this URL "
                "(see https://github.com/caronc/apprise/wiki)"
            )
    return apprise


class Fallback:
    """The fallback channel of one notifier: its evidence, its decisions, its teller thread.

    ``apprise``: what tells (:func:`apprise_for`); ``after``: ``fallback_after`` in
    seconds; ``count(n)``: messages told; ``secondary``: a second gateway account
    carries the SMS while the first fails (the messages say so).
    """

    def __init__(
        self,
        apprise: Any,
        urls: Sequence[str],
        *,
        after: float,
        store: Store,
        host: str,
        sid: str,
        count: Callable[[int], None],
        secondary: bool = False,
    ) -> None:
        self.apprise = apprise
        self.secondary = secondary
        self.urls = tuple(urls)
        self.after = after
        self.store = store
        self.host, self.sid = host, sid
        self.count = count
        self.watch = Watch()
        self.reset()

    def reset(self) -> None:
        """Per-process state (a forked child starts its own)."""
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.watch.reset_lock()
        self.watch.dead = []
        self._queue: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Fallback({len(self.urls)} apprise URL(s), after={self.after:g}s)"

    def tick(self) -> None:
        """Housekeeping, about once a second: decide on what the dispatcher saw; tell if due."""
        now = self.store.now()
        events = self.watch.take(now, self.after)
        counts = self.store.outbox_counts()
        where = Situation(self.host, self.sid, counts.pending, counts.dead, self.secondary)
        messages = self.store.transact(lambda tx: decide(tx, events, where, self.owner))
        if messages:
            self._start()
            self._queue.put(messages)

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._tell_loop, name="sslsms-fallback", daemon=True)
            self._thread.start()

    def _tell_loop(self) -> None:
        while True:
            messages = self._queue.get()
            ok = True
            for raw in messages:
                title, body = json.loads(raw)
                try:
                    sent = bool(self.apprise.notify(title=title, body=body))
                except Exception as exc:  # apprise's plugins may raise: keep the thread
                    _log.warning("the fallback channel failed", error=f"{type(exc).__name__}: {exc}")
                    sent = False
                if not sent:
                    ok = False
                    _log.warning("the fallback channel did not take a message; it is retried", title=title)
                    break
                self.count(1)
                _log.warning("told the fallback channel", title=title)
            with contextlib.suppress(Exception):
                self.store.transact(partial(told, owner=self.owner, messages=messages, ok=ok))

    def state(self) -> dict[str, Any]:
        """The shared state, for a look from outside (tests, ``/healthz`` some day)."""
        notice = self.store.transact(lambda tx: tx.notices.get(KEY))
        if notice is None:
            return {"state": "ok", "queued": 0, "told": 0}
        return {
            "state": notice.state,
            "since": notice.since,
            "queued": len(notice.queue),
            "told": notice.told,
        }


def wait_told(fallback: Fallback, count: int, timeout: float) -> bool:
    """Until ``count`` messages were told (any process), or ``timeout``; for tests and ``close``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(fallback.state()["told"]) >= count:
            return True
        time.sleep(0.05)
    return int(fallback.state()["told"]) >= count
