"""What every body kind shares: the spec of an alert, refusals that name the field, decoding."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Final, Literal

from ..._log import MASK, redact
from ...gateway.clean import clean_text
from ...gateway.text import ellipsis_for, encoding_of
from ...severity import SEVERITY_NAMES

MAX_TEXT: Final = 1000  # characters of alert text (the gateway's own limit per SMS body)
MAX_KEY: Final = 200
MAX_SOURCE: Final = 100
MAX_NAME: Final = 100  # one group name, phone number or tag
MAX_ITEMS: Final = 100  # groups, or tags, of one alert
MAX_FINGERPRINT: Final = 64
MAX_LABELS: Final = 64  # labels of one webhook alert the pipeline carries (silences match them)
SHOWN: Final = 60  # the longest piece of a value an error message repeats

#: kept for code that imported it from here: :data:`sslsms_notify.severity.SEVERITY_NAMES`
_ALIASES: Final[Mapping[str, str]] = SEVERITY_NAMES


Status = Literal["firing", "resolved"]


@dataclasses.dataclass(frozen=True, slots=True)
class AlertSpec:
    """One alert for the pipeline, as a webhook described it."""

    text: str  # the SMS body before the "[SEV] origin:" prefix is added
    severity: str = "error"  # one of SEVERITIES
    key: str | None = None  # dedup identity
    groups: tuple[str, ...] | None = None  # group names or phone numbers; None: routing rules decide
    source: str = ""  # shown in the SMS as origin, e.g. "alertmanager/node-exporter"
    tags: tuple[str, ...] = ()
    #: a webhook alert's identity from firing to resolved: ``am:{fingerprint}@{startsAt}``
    #: (None when the webhook gives no startsAt: the dedup window decides instead)
    lifecycle: str | None = None
    #: the alert ended: an all-clear, tagged [RESOLVED] instead of its severity
    resolved: bool = False
    #: a webhook alert's labels, ``(name, value)`` pairs sorted by name: silences match them
    labels: tuple[tuple[str, str], ...] = ()


class PayloadError(ValueError):
    """A body the relay refuses; ``str()`` is ``"{field}: {rule}"``.

    ``field`` is a dotted path (``alerts[2].labels.severity``, ``text``, ``body`` for the
    whole document), ``rule`` a sentence, ``status`` the HTTP status to answer.
    """

    field: str
    rule: str
    status: int

    def __init__(self, field: str, rule: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.status = status


# --- showing values in error messages --------------------------------------------------

_SECRET_WORD = re.compile(
    r"bearer|basic\s|token|secret|passw|pwd|api[-_]?key|auth|private[-_]?key|credential|session|cookie|signature",
    re.IGNORECASE,
)
# A long unbroken run of token characters: an API key, a JWT, a hash, a base64 blob.
_OPAQUE = re.compile(r"[A-Za-z0-9_\-+/=.~%]{20,}")


def _is_opaque(run: str) -> bool:
    return any(c.isdigit() for c in run) and any(c.isalpha() for c in run)


def scrub(text: str, *, is_name: bool = False) -> str:
    """A value as an error message may show it: secrets masked, at most SHOWN characters.

    A value that mentions a token, password, ... is masked whole; a field name such as
    ``api_token`` is not (naming it is the point), but opaque runs in it still are.
    """
    text = redact(text)  # secrets the process registered (the gateway's API token)
    if not is_name and _SECRET_WORD.search(text):
        return MASK
    text = _OPAQUE.sub(lambda m: MASK if _is_opaque(m.group()) else m.group(), text)
    if len(text) > SHOWN:
        text = text[: SHOWN - 3] + "..."
    return text


def shown_value(value: object) -> str:
    """A string value quoted and scrubbed; anything else by its JSON type only."""
    if isinstance(value, str):
        return f"'{scrub(value)}'"
    return kind_of(value)


def kind_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def field_at(path: str, name: object) -> str:
    """``path.name``; the name is scrubbed, since unknown field names come from the sender."""
    shown = scrub(str(name), is_name=True)
    return f"{path}.{shown}" if path else shown


def item_at(path: str, index: int) -> str:
    return f"{path}[{index}]"


def webhook_labels(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """An alert's labels as the pipeline carries them (silences match them): sorted by
    name, at most :data:`MAX_LABELS`, each value at most :data:`MAX_TEXT` characters."""
    return tuple((name, labels[name][:MAX_TEXT]) for name in sorted(labels)[:MAX_LABELS])


# --- decoding ----------------------------------------------------------------------------


class _NotJSON(ValueError):
    pass


def _reject_constant(name: str) -> object:
    raise _NotJSON(f"{name} is not JSON")


def decode_body(raw: bytes | str) -> object:
    """Request body to data; 400 unless it is UTF-8 JSON (NaN and Infinity are not JSON)."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise PayloadError("body", "is not UTF-8 text", status=400) from None
    except json.JSONDecodeError as exc:  # its message names a position, never the content
        raise PayloadError(
            "body", f"is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", status=400
        ) from None
    except _NotJSON as exc:
        raise PayloadError("body", f"is not JSON ({exc})", status=400) from None
    except RecursionError:
        raise PayloadError("body", "is nested too deeply", status=400) from None


def squash(text: str, limit: int) -> str:
    """:func:`clean_text` (escapes, control and bidirectional characters out: the rule every
    door shares), whitespace runs to one space (templates love newlines; SMS pays for them),
    then cut. Cleaning before cutting means the limit counts what the phone shows.

    The cut marker follows the text's encoding, so a GSM-7 text is not turned into a
    UCS-2 one (three times the segments) by a "…".
    """
    text = " ".join(clean_text(text).split())
    if len(text) <= limit:
        return text
    marker = ellipsis_for(encoding_of(text))
    return text[: limit - len(marker)].rstrip() + marker
