"""Checks for option values: every error names the field, the value and the rule, in one line.

Two layers:

- :func:`non_negative`, :func:`positive`, :func:`integer`: quick checks of typed values,
  used by the :class:`~sslsms_notify.Notifier` for its keyword arguments.
- Rules (:class:`Number`, :class:`Positive`, :class:`Whole`, :class:`Flag`,
  :class:`Choice`, :class:`Level`, :class:`StoreURL`, :class:`HttpURL`, :class:`Text`;
  every one a :class:`Rule`): what a setting accepts, written once and used for every
  door (URL argument, TOML key, environment variable, keyword). ``check(label, value,
  text=...)`` returns the normalised value or raises a ValueError naming ``label``
  (``<label>=<value>: must be <rule>``); ``text=True`` means the value is a string a
  person typed (URL, environment, command line) and is parsed first. ``rule`` is the
  sentence the configuration reference prints.

:func:`mask_credentials` masks every credential in any text holding URLs; it is what
every printed URL, repr and error message goes through.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "****"
#: longest value repr shown in an error message (a pasted file must not flood a terminal)
MAX_SHOWN = 80


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name}={value!r}: must be a number")
    if not math.isfinite(value):
        raise ValueError(f"{name}={value!r}: must be a finite number")
    return float(value)


def non_negative(name: str, value: Any, *, maximum: float | None = None) -> float:
    number = _number(name, value)
    if number < 0:
        raise ValueError(f"{name}={value!r}: must not be negative")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}={value!r}: must be at most {maximum:g}")
    return number


def positive(name: str, value: Any, *, maximum: float | None = None) -> float:
    number = _number(name, value)
    if number <= 0:
        raise ValueError(f"{name}={value!r}: must be greater than 0")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}={value!r}: must be at most {maximum:g}")
    return number


def integer(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name}={value!r}: must be a whole number")
    if value < minimum:
        raise ValueError(f"{name}={value!r}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value!r}: must be at most {maximum}")
    return int(value)


# -- rules with a sentence ------------------------------------------------------------
class InvalidValue(ValueError):
    """A value that breaks its setting's rule: ``<label>=<value>: must be <rule>``."""

    def __init__(self, label: str, shown: str | None, rule: str) -> None:
        self.label, self.shown, self.rule = label, shown, rule
        where = label if shown is None else f"{label}={shown}"
        super().__init__(f"{where}: {rule}")


def shown(value: Any) -> str:
    """``repr(value)``, masked if it holds a URL with credentials, and cut if very long."""
    text = mask_credentials(repr(value))
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 4] + "...'"


def fail(label: str, value: Any, rule: str, *, secret: bool = False) -> NoReturn:
    raise InvalidValue(label, None if secret else shown(value), rule)


def _g(number: float) -> str:
    """300.0 -> '300', 0.5 -> '0.5', 2592000 -> '2592000' (never '2.592e+06')."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


@dataclass(frozen=True)
class Number:
    """A finite number in a range; ``whole``: an integer; ``unit``: what it counts."""

    low: float
    high: float
    low_open: bool = False
    whole: bool = False
    unit: str = ""
    #: e.g. "0 turns it off": said after the range
    note: str = ""

    @property
    def rule(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        if self.unit:
            kind += f" of {self.unit}"
        high = _g(self.high)
        if self.unit == "seconds" and self.high >= 86400:
            days = self.high / 86400
            high += f" ({_g(days)} day{'s' if days != 1 else ''})"
        span = (
            f"greater than {_g(self.low)} and at most {high}"
            if self.low_open
            else f"from {_g(self.low)} to {high}"
        )
        return f"must be {kind} {span}" + (f"; {self.note}" if self.note else "")

    def check(self, label: str, value: Any, *, text: bool = False) -> int | float:
        number = value
        if text and isinstance(value, str):
            number = _parse_number(value.strip())
            if number is None:
                fail(label, value, self.rule)
        if isinstance(number, bool) or not isinstance(number, int | float):
            fail(label, value, self.rule)
        if not math.isfinite(number):
            fail(label, value, self.rule)
        if self.whole and not float(number).is_integer():
            fail(label, value, self.rule)
        if number < self.low or (self.low_open and number == self.low) or number > self.high:
            fail(label, value, self.rule)
        return int(number) if self.whole else float(number)


def _parse_number(text: str) -> int | float | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


class Rule(Protocol):
    """What a setting accepts: a sentence for people and a check for values."""

    @property
    def rule(self) -> str:
        """``must be ...``: the sentence the configuration reference prints."""
        ...

    def check(self, label: str, value: Any, *, text: bool = False) -> Any:
        """``value`` normalised, or a ValueError naming ``label``, the value and the rule."""
        ...


@dataclass(frozen=True)
class Positive:
    """A number greater than 0 and at most ``maximum``; a failure names the one bound
    broken (``must be greater than 0``, ``must be at most 600``), as :func:`positive` does."""

    maximum: float
    unit: str = ""

    @property
    def rule(self) -> str:
        kind = f"a number of {self.unit}" if self.unit else "a number"
        return f"must be {kind} greater than 0 and at most {_g(self.maximum)}"

    def check(self, label: str, value: Any, *, text: bool = False) -> float:
        if text and isinstance(value, str):
            parsed = _parse_number(value.strip())
            value = value if parsed is None else parsed
        return positive(label, value, maximum=self.maximum)


@dataclass(frozen=True)
class Whole:
    """A whole number from ``minimum`` to ``maximum``; a failure names the one bound
    broken (``must be at least 1024``), as :func:`integer` does."""

    minimum: int
    maximum: int

    @property
    def rule(self) -> str:
        return f"must be a whole number from {self.minimum} to {self.maximum}"

    def check(self, label: str, value: Any, *, text: bool = False) -> int:
        if text and isinstance(value, str):
            parsed = _parse_number(value.strip())
            value = value if parsed is None else parsed
        return integer(label, value, minimum=self.minimum, maximum=self.maximum)


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


@dataclass(frozen=True)
class Flag:
    """``true`` or ``false`` (typed: also yes/no, on/off, 1/0)."""

    rule: str = "must be true or false"

    def check(self, label: str, value: Any, *, text: bool = False) -> bool:
        if text and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            fail(label, value, self.rule)
        return value


@dataclass(frozen=True)
class Choice:
    """One of ``choices``; ``any_case``: in any case, with spaces around, stored as listed."""

    choices: tuple[str, ...]
    any_case: bool = False

    @property
    def rule(self) -> str:
        return f"must be one of {', '.join(self.choices)}" + (" (any case)" if self.any_case else "")

    def check(self, label: str, value: Any, *, text: bool = False) -> str:
        if isinstance(value, str):
            key = value.strip().lower() if self.any_case or text else value
            if key in self.choices:
                return key
        fail(label, value, self.rule)


@dataclass(frozen=True)
class Text:
    """A string: ``max_length`` characters, ``no_spaces`` for identifiers; ``secret``: never shown."""

    what: str = "a string"
    min_length: int = 0
    max_length: int = 1000
    no_spaces: bool = False
    secret: bool = False

    @property
    def rule(self) -> str:
        length = (
            f"{self.min_length} to {self.max_length} characters"
            if self.min_length
            else f"at most {self.max_length} characters"
        )
        spaces = " without spaces" if self.no_spaces else ""
        hidden = " (the value is a secret and is not shown)" if self.secret else ""
        return f"must be {self.what} of {length}{spaces}{hidden}"

    def check(self, label: str, value: Any, *, text: bool = False) -> str:
        if not isinstance(value, str):
            fail(label, value, self.rule, secret=self.secret and isinstance(value, str))
        stripped = value.strip() if text else value
        if (
            len(stripped) < self.min_length
            or len(stripped) > self.max_length
            or (self.no_spaces and any(c.isspace() for c in stripped))
            or not all(c.isprintable() or c == " " for c in stripped)
        ):
            fail(label, value, self.rule, secret=self.secret)
        return stripped


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: the same names as ``serve --log-level`` and ``[relay] log_level`` take them (any case)
LOG_LEVELS = tuple(name.lower() for name in LEVELS)


@dataclass(frozen=True)
class Level:
    """A logging level: a name (any case) or a number 0..50; names are stored upper case."""

    @property
    def rule(self) -> str:
        names = ", ".join(n.lower() for n in LEVELS)
        return f"must be one of {names} (any case) or a number from 0 to 50"

    def check(self, label: str, value: Any, *, text: bool = False) -> str | int:
        number = value
        if isinstance(value, str):
            name = value.strip().upper()
            if name in LEVELS:
                return name
            if text and name.isdigit() and name.isascii():
                number = int(name)
        if isinstance(number, int) and not isinstance(number, bool) and 0 <= number <= 50:
            return number
        fail(label, value, self.rule)


_REDIS_SCHEMES = ("redis", "rediss", "unix")
#: Redis through Sentinel: the scheme, and whether it speaks TLS (to the sentinels and the master)
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
SENTINEL_PORT = 26379
#: what a Sentinel URL's query may set (the TLS files and checks take redis-py's names)
SENTINEL_ARGS = ("sentinel_password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
SENTINEL_FORM = "redis+sentinel://[:PASSWORD@]HOST[:26379][,HOST2[:26379]...]/SERVICE_NAME[/DB]"


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` (or ``rediss+sentinel://``) URL (see :func:`parse_sentinel_url`)."""

    #: the sentinels, (host, port) each
    sentinels: tuple[tuple[str, int], ...]
    #: the name the sentinels monitor the master by (``sentinel monitor NAME ...``)
    service: str
    db: int
    #: the master's and replicas' credentials (``requirepass``, or an ACL user)
    username: str | None
    password: str | None
    #: TLS to the sentinels and the master
    tls: bool
    #: the query's settings: ``sentinel_password`` and redis-py's ``ssl_*`` names
    options: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"SentinelURL(service={self.service!r}, sentinels={self.sentinels!r}, db={self.db})"


def parse_sentinel_url(url: str) -> SentinelURL:
    """``redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE_NAME[/DB]``.

    The port defaults to 26379, the database to 0; an IPv6 host is written in brackets.
    ``rediss+sentinel://`` speaks TLS to the sentinels and to the master. The query may
    set ``sentinel_password`` (the sentinels' own ``requirepass``) and redis-py's
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and ``ssl_cert_reqs``. A
    ValueError says what is wrong, never with the password.
    """
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError(f"must be {SENTINEL_FORM}")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) if colon else None
        if not colon:  # redis://TOKEN@host: a bare password, as redis-py reads it
            username, password = None, unquote(user)
    sentinels = tuple(_sentinel_address(h) for h in hosts.split(","))
    names = [unquote(p) for p in path.split("/") if p]
    if not names or len(names) > 2:
        raise ValueError(f"must name the master's service, then its database: {SENTINEL_FORM}")
    if len(names) == 2 and not (names[1].isascii() and names[1].isdigit()):
        raise ValueError(f"the database must be a number: {SENTINEL_FORM}")
    options: list[tuple[str, str]] = []
    tls = SENTINEL_SCHEMES[scheme.lower()]
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in SENTINEL_ARGS:
            raise ValueError(f"?{key}=: unknown (known: {', '.join(SENTINEL_ARGS)})")
        if key.startswith("ssl_") and not tls:
            raise ValueError(f"?{key}=: TLS settings need rediss+sentinel://")
        options.append((key, value))
    return SentinelURL(
        sentinels=sentinels,
        service=names[0],
        db=int(names[1]) if len(names) == 2 else 0,
        username=username,
        password=password,
        tls=tls,
        options=tuple(options),
    )


def _sentinel_address(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[::1]:port`` -> (host, port)."""
    host, port = text.strip(), ""
    if host.startswith("["):
        host, _, tail = host[1:].partition("]")
        if tail and not tail.startswith(":"):
            raise ValueError(f"{text!r}: not a sentinel address (HOST:PORT, [IPv6]:PORT)")
        port = tail[1:]
    elif host.count(":") == 1:
        host, port = host.split(":")
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"{text!r}: not a sentinel address: {SENTINEL_FORM}")
    if not port:
        return host, SENTINEL_PORT
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


@dataclass(frozen=True)
class StoreURL:
    """Where the pipeline keeps its state."""

    rule: str = (
        "must be memory, sqlite:///PATH (sqlite:////ABSOLUTE/PATH), redis://HOST:PORT/DB, "
        "rediss://HOST:PORT/DB, unix:///SOCKET or "
        "redis+sentinel://HOST:26379[,HOST2:26379...]/SERVICE_NAME/DB (rediss+sentinel:// for TLS)"
    )

    def check(self, label: str, value: Any, *, text: bool = False) -> Any:
        if not isinstance(value, str):
            if not text and hasattr(value, "outbox_claim") and hasattr(value, "transact"):
                return value  # a Store instance, given in code (Notifier(store=...) takes one too)
            fail(label, value, self.rule)
        spec = value.strip()
        if spec in ("memory", "memory://"):
            return "memory"
        if spec.startswith("sqlite:///"):
            path = spec.removeprefix("sqlite:///")
            if not path.strip() or "\x00" in path:
                fail(label, value, self.rule)
            return spec
        if spec.partition("://")[0].lower() in SENTINEL_SCHEMES:
            try:
                parse_sentinel_url(spec)
            except ValueError as exc:
                fail(label, value, f"{exc}")
            return spec
        try:
            parts = urlsplit(spec)
            port = parts.port
        except ValueError:
            fail(label, value, self.rule)
        if parts.scheme not in _REDIS_SCHEMES:
            fail(label, value, self.rule)
        if parts.scheme == "unix":
            if not parts.path:
                fail(label, value, self.rule)
            return spec
        database = parts.path.strip("/")
        if not parts.hostname or (database and not database.isdigit()) or port == 0:
            fail(label, value, self.rule)
        return spec


@dataclass(frozen=True)
class HttpURL:
    """An http(s) address with a host (the gateway's base URL)."""

    rule: str = "must be an http:// or https:// URL with a host, e.g. https://smsplus.sslwireless.com"

    def check(self, label: str, value: Any, *, text: bool = False) -> str:
        if not isinstance(value, str):
            fail(label, value, self.rule)
        url = value.strip()
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            fail(label, value, self.rule)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or port == 0
            or any(c.isspace() for c in url)
        ):
            fail(label, value, self.rule)
        return url.rstrip("/")


# -- masking --------------------------------------------------------------------------
# scheme://userinfo@ : everything after the first ':' of userinfo is a password; a
# userinfo without ':' may be a bare token (redis://TOKEN@host, https://TOKEN@host).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^\s/?#@]*)@")
# the same, percent-encoded inside another URL's query (store=redis%3A%2F%2F%3APASS%40host)
_USERINFO_QUOTED = re.compile(
    r"(?P<scheme>%3[Aa]%2[Ff]%2[Ff])(?P<info>(?:[^\s/?#&'\"%]|%(?!40)[0-9A-Fa-f]{2})*)%40"
)
_SECRET_ARGS = re.compile(
    r"(?P<key>(?:[?&;]|%3[Ff]|%26)(?:api_token|token|(?:sentinel_)?password|passwd|pwd|secret)(?:=|%3[Dd]))"
    r"(?P<value>[^&\s#'\"%]*(?:%(?!26)[0-9A-Fa-f]{2}[^&\s#'\"%]*)*)",
    re.IGNORECASE,
)


def mask_credentials(text: str) -> str:
    """``text`` with every credential of every URL in it replaced by ``****``.

    ``sslsms://SID:TOKEN@`` -> ``sslsms://SID:****@``, ``redis://:PASS@host`` ->
    ``redis://:****@host``, ``https://user:pass@host`` -> ``https://user:****@host``,
    ``redis://TOKEN@host`` -> ``redis://****@host``; also ``?password=``,
    ``?sentinel_password=``, ``?api_token=`` and the percent-encoded forms of all of these (a store URL inside
    an sslsms:// URL's query).
    """
    if "@" not in text and "%40" not in text and "=" not in text and "%3D" not in text.upper():
        return text
    text = _USERINFO.sub(lambda m: m["scheme"] + _masked_info(m["info"], ":") + "@", text)
    text = _USERINFO_QUOTED.sub(lambda m: m["scheme"] + _masked_info(m["info"], "%3A") + "%40", text)
    return _SECRET_ARGS.sub(lambda m: m["key"] + (MASK if m["value"] else ""), text)


#: placeholders of our own help texts and messages (sslsms://SID:API_TOKEN@...): not secrets
_PLACEHOLDERS = frozenset({"API_TOKEN", "TOKEN", MASK})


def _masked_info(info: str, colon: str) -> str:
    index = info.upper().find(colon)
    secret = info[index + len(colon) :] if index >= 0 else info
    if not secret or secret in _PLACEHOLDERS:  # placeholders are written in capitals
        return info
    return MASK if index < 0 else info[: index + len(colon)] + MASK
