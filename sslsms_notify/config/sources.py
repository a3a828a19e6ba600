"""Where values enter: an ``sslsms://`` URL, a TOML file, the environment.

Each reader returns ``{field: value}`` with every value already checked by its
declaration (:mod:`.registry`), the error naming the value as the user wrote it: the
URL argument (``dedup='-1'``), the TOML key (``pipeline.dedup_window``), the variable.
The records (:class:`~.settings.Settings`, :class:`~sslsms_notify.relay.settings.RelaySettings`)
are built from these; the cross-checks that need several values are theirs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..gateway.msisdn import InvalidMsisdnError, normalize_msisdn
from ..validation import InvalidValue, fail
from .errors import ConfigError, mask_url
from .registry import (
    BY_NAME,
    BY_TOML,
    BY_URL_ARG,
    OTHER_SECTIONS,
    SCHEME,
    SECTIONS,
    TABLES,
    Setting,
    owner_section,
)

#: what a bad value raises on its way in (wrapped into a ConfigError that says where)
BAD_VALUE = (InvalidValue, ConfigError, InvalidMsisdnError)


def url_values(url: Any) -> dict[str, Any]:
    """The fields an ``sslsms://`` URL sets: credentials, recipients, and its arguments."""
    if not isinstance(url, str):
        fail("url", url, f"must be an {SCHEME}:// URL string")
    text = url.strip()
    if any(c.isspace() for c in text):
        raise ConfigError("URL must not contain spaces (percent-encode them as %20)")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ConfigError(f"URL {mask_url(text)!r} is not a valid URL: {exc}") from None
    if parts.scheme != SCHEME:
        raise ConfigError(
            f"URL must start with {SCHEME}://SID:API_TOKEN@NUMBER, not {parts.scheme or 'no scheme'}://"
        )
    if parts.fragment or text.endswith("#"):
        raise ConfigError("URL must not contain '#' (percent-encode it as %23)")
    userinfo, at, host = parts.netloc.rpartition("@")
    sid, colon, token = userinfo.partition(":")
    if not at or not sid:
        raise ConfigError(f"URL must start with {SCHEME}://SID:API_TOKEN@ (the SID is missing)")
    if not colon or not token:
        raise ConfigError(f"URL must start with {SCHEME}://SID:API_TOKEN@ (the API token is missing)")
    numbers = [unquote(n) for n in [host, *parts.path.split("/")] if n]
    values: dict[str, Any] = {}
    seen: set[str] = set()
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        if name in seen:
            raise ConfigError(f"URL argument {name!r} is given twice")
        seen.add(name)
        if name == "to":
            numbers += [n for n in raw.split(",") if n.strip()]
            continue
        setting = BY_URL_ARG.get(name)
        if setting is None:
            known = ", ".join(sorted(BY_URL_ARG))
            raise ConfigError(f"URL argument {name!r} is unknown (known: {known})")
        values[setting.name] = setting.check(name, raw, text=True)
    recipients = tuple(dict.fromkeys(normalize_msisdn(n, field="URL recipient") for n in numbers))
    api_token = BY_NAME["api_token"].check("api_token", unquote(token))
    sid = BY_NAME["sid"].check("sid", unquote(sid))
    return {"api_token": api_token, "sid": sid, "recipients": recipients, **values}


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's tables; a file that cannot be read or parsed is a ConfigError naming it."""
    file = Path(path).expanduser()
    try:
        raw = file.read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None


def file_values(path: str | Path) -> dict[str, Any]:
    """The fields a config file sets (:func:`data_values`), errors naming the file."""
    data = read_toml(path)
    try:
        return data_values(data)
    except BAD_VALUE as exc:
        raise ConfigError(f"{Path(path).expanduser()}: {exc}") from None


def data_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """``url`` (a base), ``[gateway]``, ``[pipeline]``, ``[groups]``, ``[[routes]]``;
    every key checked by its declaration. Other records' sections (``[relay]``) are
    left to them, but must be tables."""
    known_top = ["url", *SECTIONS, *TABLES, *OTHER_SECTIONS]
    for key in data:
        if key not in known_top:
            owner = owner_section(key)
            hint = f" (it belongs in [{owner}])" if owner else f" (known: {', '.join(known_top)})"
            raise ConfigError(f"unknown top-level key {key!r}{hint}")
    values: dict[str, Any] = {}
    if "url" in data:
        if not isinstance(data["url"], str):
            fail("url", data["url"], f"must be an {SCHEME}:// URL string")
        try:
            values = url_values(data["url"])
        except BAD_VALUE as exc:
            raise ConfigError(f"url: {exc}") from None
    for section in SECTIONS:
        if section in data:
            values.update(section_values(section, data[section]))
    for key, setting in TABLES.items():
        if key in data:
            values[setting.name] = setting.check(key, data[key])
    return values


def section_values(section: str, table: Any) -> dict[str, Any]:
    """The fields one ``[section]`` sets, each key checked as ``section.key``."""
    if not isinstance(table, Mapping):
        fail(section, table, f"must be a table ([{section}])")
    values = {}
    for key, value in table.items():
        setting = BY_TOML.get(f"{section}.{key}")
        if setting is None:
            owner = owner_section(key)
            known = ", ".join(s.key for s in BY_TOML.values() if s.section == section)
            hint = f" (it belongs in [{owner}])" if owner else f" (known: {known})"
            raise ConfigError(f"[{section}] has unknown key {key!r}{hint}")
        values[setting.name] = setting.check(setting.toml, value)
    return values


def env_values(declared: Iterable[Setting], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The fields the environment sets: each declared variable that is not blank,
    checked as typed text, the error naming the variable."""
    env = os.environ if environ is None else environ
    return {
        s.name: s.check(s.env, env[s.env], text=True)
        for s in declared
        if s.env and env.get(s.env, "").strip()
    }


def read_section(path: str | Path, name: str) -> dict[str, Any]:
    """One table of a TOML config file (e.g. ``[relay]``), or ``{}``; errors name the file."""
    file = Path(path).expanduser()
    try:
        data = tomllib.loads(file.read_bytes().decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{file}: {exc}") from None
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{file}: [{name}] must be a table")
    return table
