"""Silences: alerts matching every matcher of one send nothing until it ends, then one SMS tells.

A silence is a store record (:class:`~sslsms_notify.stores.records.Silence`), so every
process and relay on one store sees it; the pipeline holds what it matches at intake
(:mod:`.holds`), and when it ends (its time runs out, or :func:`expire_silence`) each
group its alerts would have paged gets one SMS: ``[SILENCE ENDED] <comment>: N alerts
held (K kinds): <first texts>``.

Matchers are Alertmanager's (``amtool silence add``):

=================  ======================================================================
``name=value``     the field equals the value
``name!=value``    it does not
``name=~regex``    it matches the regular expression, anchored at both ends
``name!~regex``    it does not
=================  ======================================================================

A value may be double-quoted (``alertname="Disk full"``; ``\\"`` and ``\\\\`` inside).
Names: ``text``, ``source``, ``key``, ``severity`` (``debug`` ... ``critical``),
``group`` (each group an alert pages is matched apart), ``tag`` (matches if any tag
matches; ``tag!=x``: if none equals ``x``), and any label of a webhook alert
(``alertname``, ``instance``...). A field or label an alert lacks is the empty string.
Every matcher must match; at least one must not match the empty string (as in
Alertmanager: a silence of everything is refused).

This module parses matchers and durations (one parser each, one clear line per bad
value) and adds, lists and expires silences on a store; the CLI, the relay and
:meth:`Notifier.silence <sslsms_notify.alerting.notifier.Notifier.silence>` call it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import regex

from ..severity import SEVERITIES, severity_name
from ..stores.base import Store, StoreUnavailableError, Tx
from ..stores.records import Silence
from ..validation import InvalidValue, shown

#: the fields every alert has (anything else names a webhook label)
FIELDS = ("text", "source", "key", "severity", "group", "tag")
#: a silence lasts at most this long
MAX_DURATION = 30 * 86400.0
MAX_MATCHERS = 20
MAX_VALUE = 1000
MAX_COMMENT = 200
#: active silences at most (each intake round reads them all)
MAX_SILENCES = 500
#: a regular expression that takes longer than this on one value does not match (logged)
REGEX_TIMEOUT = 0.05
#: what separates a silence's id from a group in its holds' keys
SEP = "\x1f"
_OPS = ("!~", "=~", "!=", "=")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)([wdhms]))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNIT = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l, o, 0, 1: read aloud at 3 a.m.
MATCHER_RULE = 'must be name=value, name!=value, name=~regex or name!~regex (e.g. alertname="DiskFull")'
DURATION_RULE = "must be a duration like 30m, 2h, 1d or 1h30m, at most 30d"


class UnknownSilenceError(ValueError):
    """No active silence has this id."""


@dataclass(frozen=True, slots=True)
class Matcher:
    """One matcher: ``name``, ``op`` (``=``, ``!=``, ``=~``, ``!~``) and ``value``."""

    name: str
    op: str
    value: str
    pattern: Any = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.name}{self.op}{_quoted(self.value)}"

    def test(self, values: tuple[str, ...]) -> bool:
        """Whether the matcher holds for a field with these values (a tag set; else one value)."""
        if self.pattern is not None:
            hit = any(_fullmatch(self.pattern, v) for v in values)
        else:
            hit = self.value in values
        return hit if self.op in ("=", "=~") else not hit


def parse_matcher(text: object, label: str = "matcher") -> Matcher:
    """``alertname="DiskFull"`` -> a :class:`Matcher`; a ValueError names ``label`` and the rule."""
    if not isinstance(text, str):
        raise InvalidValue(label, shown(text), MATCHER_RULE)
    written = text.strip()
    name_match = _NAME.match(written)
    if name_match is None:
        raise InvalidValue(label, shown(text), f"{MATCHER_RULE}; a name is letters, digits and _")
    name, rest = name_match.group(), written[name_match.end() :].lstrip()
    op = next((o for o in _OPS if rest.startswith(o)), None)
    if op is None:
        raise InvalidValue(label, shown(text), MATCHER_RULE)
    value = _unquoted(rest[len(op) :].strip(), label, text)
    if len(value) > MAX_VALUE:
        raise InvalidValue(label, shown(text), f"its value must be at most {MAX_VALUE} characters")
    if name == "severity" and op in ("=", "!="):
        level = severity_name(value)
        if level is None:
            raise InvalidValue(label, shown(text), f"severity must be one of {', '.join(SEVERITIES)}")
        value = level
    pattern = None
    if op in ("=~", "!~"):
        try:
            pattern = regex.compile(value)
        except regex.error as exc:
            raise InvalidValue(label, shown(text), f"not a regular expression: {exc}") from None
    return Matcher(name, op, value, pattern)


def parse_matchers(texts: Iterable[object], label: str = "matchers") -> tuple[Matcher, ...]:
    """Every matcher of a silence, each error naming ``label[i]``; at least one, and at least
    one that does not match the empty string."""
    if isinstance(texts, str | bytes) or not isinstance(texts, Iterable):
        raise InvalidValue(label, None, 'must be a list of matchers like alertname="DiskFull"')
    matchers = tuple(parse_matcher(t, f"{label}[{i}]") for i, t in enumerate(texts))
    if not matchers:
        raise InvalidValue(label, None, f"give at least one matcher: {MATCHER_RULE}")
    if len(matchers) > MAX_MATCHERS:
        raise InvalidValue(label, None, f"at most {MAX_MATCHERS} matchers")
    if all(m.test(("",)) for m in matchers):
        raise InvalidValue(
            label,
            None,
            "at least one matcher must not match the empty string (a silence of everything is "
            'refused, as in Alertmanager): add one like alertname="DiskFull" or source=~"app\\.db.*"',
        )
    return matchers


@lru_cache(maxsize=2048)
def compiled(texts: tuple[str, ...]) -> tuple[Matcher, ...] | None:
    """A stored silence's matchers, parsed once per process (None: this version cannot read them)."""
    try:
        return tuple(parse_matcher(t) for t in texts)
    except ValueError:
        return None


def parse_duration(value: object, label: str = "for") -> float:
    """``30m``, ``2h``, ``1d``, ``1h30m`` (units ``w d h m s``) -> seconds, at most 30 days.

    A number (JSON) counts seconds; a string needs its units.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidValue(label, shown(value), DURATION_RULE)
    if isinstance(value, str):
        written = value.strip().lower()
        if not _DURATION.fullmatch(written):
            raise InvalidValue(label, shown(value), DURATION_RULE)
        seconds = sum(float(n) * _UNIT[unit] for n, unit in _PART.findall(written))
    else:
        seconds = float(value)
    if not seconds > 0:
        raise InvalidValue(label, shown(value), f"{DURATION_RULE}: it must be longer than 0")
    if seconds > MAX_DURATION:
        raise InvalidValue(label, shown(value), "must be at most 30d (a silence longer than that is refused)")
    return seconds


def check_comment(value: object, label: str = "comment") -> str:
    """A silence's comment: text on one line, at most :data:`MAX_COMMENT` characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidValue(label, shown(value), "must be a string")
    comment = " ".join(value.split())
    if len(comment) > MAX_COMMENT:
        raise InvalidValue(label, None, f"must be at most {MAX_COMMENT} characters")
    return comment


def silence_hold_key(silence_id: str, group: str) -> str:
    """The key of what a silence held for one group (a :class:`~..stores.records.Hold` row)."""
    return f"s{SEP}{silence_id}{SEP}{group}"


def silence_label(silence: Silence) -> str:
    """What its end SMS calls a silence: its comment, else its matchers."""
    return silence.comment or ", ".join(silence.matchers)


# -- silences on a store --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SilenceInfo:
    """A silence as ``silence list``, ``GET /v1/silences`` and :meth:`Notifier.silences` show it."""

    id: str
    matchers: tuple[str, ...]
    comment: str
    created_at: float
    ends_at: float
    #: alerts held so far, in all
    held: int = 0
    #: alerts held so far per group (each group gets its own SMS at the end)
    groups: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        def iso(ts: float) -> str:
            return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

        return {
            "id": self.id,
            "matchers": list(self.matchers),
            "comment": self.comment,
            "starts_at": iso(self.created_at),
            "ends_at": iso(self.ends_at),
            "held": self.held,
            "groups": dict(self.groups),
        }


def _shared(store: Store) -> None:
    """A silence must reach every process on the store: refused while writes go elsewhere."""
    health = store.health()
    if health.state in ("spooling", "down"):
        raise StoreUnavailableError(
            f"the store cannot keep a silence every process sees now ({health.state}: {health.detail}); "
            "try again once it is back"
        )


def _info(tx: Tx, silence: Silence) -> SilenceInfo:
    # "" is the silence's own count: each alert once, however many groups it would have paged
    keys = {g: silence_hold_key(silence.key, g) for g in ("", *silence.groups)}
    tx.holds.load(keys.values())
    held = {g: hold.count for g, k in keys.items() if (hold := tx.holds.get(k)) is not None}
    total = held.pop("", 0)
    return SilenceInfo(
        silence.key, silence.matchers, silence.comment, silence.created_at, silence.ends_at, total, held
    )


def active(tx: Tx) -> list[Silence]:
    """The silences in force now, loaded in ``tx`` (the soonest to end first)."""
    keys = tx.earliest("silences", 2 * MAX_SILENCES)
    if not keys:
        return []
    tx.silences.load(keys)
    return [s for k in keys if (s := tx.silences.get(k)) is not None and s.created_at <= tx.now < s.ends_at]


def add_silence(
    store: Store, matchers: Sequence[object], duration: object, comment: object = ""
) -> SilenceInfo:
    """A new silence on ``store`` from now for ``duration``; returns it (its ``id``).

    Raises ValueError (naming ``matchers[i]``, ``for`` or ``comment``) for bad input or
    too many silences, :class:`StoreUnavailableError` when the store cannot share it now.
    """
    parsed = parse_matchers(matchers)
    seconds = parse_duration(duration)
    text = check_comment(comment)
    _shared(store)
    silence_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))

    def add(tx: Tx) -> SilenceInfo:
        if len(active(tx)) >= MAX_SILENCES:
            raise InvalidValue("matchers", None, f"{MAX_SILENCES} silences are active already: expire some")
        silence = Silence(silence_id, tuple(str(m) for m in parsed), text, tx.now, tx.now + seconds)
        tx.silences.put(silence_id, silence)
        return _info(tx, silence)

    return store.transact(add)


def list_silences(store: Store) -> list[SilenceInfo]:
    """The silences in force on ``store``, the soonest to end first, with what each held so far."""
    return store.transact(lambda tx: [_info(tx, s) for s in active(tx)])


def expire_silence(store: Store, silence_id: str) -> SilenceInfo:
    """End a silence now: its end SMS go out with the store's next sweep. Returns it as it ended.

    Raises :class:`UnknownSilenceError` when no active silence has this id.
    """
    wanted = silence_id.strip() if isinstance(silence_id, str) else ""
    _shared(store)

    def end(tx: Tx) -> SilenceInfo:
        silence = tx.silences.get(wanted) if wanted else None
        if silence is None or silence.ends_at <= tx.now:
            raise UnknownSilenceError(
                f"id={silence_id!r}: no active silence has this id (silence list shows them)"
            )
        info = _info(tx, silence)
        tx.silences.delete(wanted)
        for group in ("", *silence.groups):
            key = silence_hold_key(wanted, group)
            hold = tx.holds.get(key)
            if hold is not None:
                tx.holds.put(key, replace(hold, ends_at=tx.now))
        return replace(info, ends_at=tx.now)

    return store.transact(end)


def _fullmatch(pattern: Any, value: str) -> bool:
    try:
        return pattern.fullmatch(value, timeout=REGEX_TIMEOUT) is not None
    except TimeoutError:
        return False


def _quoted(value: str) -> str:
    out = []
    for index, char in enumerate(value):
        following = value[index + 1 : index + 2]
        if char == '"':
            out.append('\\"')
        elif char == "\\" and following in ('"', "\\", ""):
            out.append("\\\\")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _unquoted(value: str, label: str, text: object) -> str:
    """A value as written: unquoted, or in double quotes with ``\\"`` and ``\\\\`` inside."""
    if not value.startswith('"'):
        return value
    out: list[str] = []
    index = 1
    while index < len(value):
        char = value[index]
        if char == "\\" and value[index + 1 : index + 2] in ('"', "\\"):
            out.append(value[index + 1])
            index += 2
            continue
        if char == '"':
            if index != len(value) - 1:
                raise InvalidValue(label, shown(text), 'a double quote inside a quoted value is written \\"')
            return "".join(out)
        out.append(char)
        index += 1
    raise InvalidValue(label, shown(text), "a quoted value must end with a double quote")
