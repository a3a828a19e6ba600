"""The effective configuration, :class:`Settings`: read from one source, checked, printed."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..gateway.client import GatewayClient
from ..gateway.msisdn import InvalidMsisdnError
from ..validation import MASK, InvalidValue, shown
from .errors import ConfigError, NoConfiguration, mask_url
from .registry import BY_NAME, PIPELINE_FIELDS, SCHEME, SETTINGS, as_text
from .rules import looks_like_number
from .sources import BAD_VALUE, env_values, file_values, url_values

DEFAULT_CONFIG_PATH = Path("~/.config/sslsms-notify/config.toml")


def _default(name: str) -> Any:
    value = BY_NAME[name].default
    return field(default_factory=dict) if isinstance(value, dict) else value


@dataclass(frozen=True)
class Settings:
    """The effective configuration. Build it with :meth:`from_url`, :meth:`from_toml`,
    :meth:`load`, or keywords followed by :meth:`validated`."""

    api_token: str = field(default=BY_NAME["api_token"].default, repr=False)
    sid: str = BY_NAME["sid"].default
    recipients: tuple[str, ...] = BY_NAME["recipients"].default
    groups: Mapping[str, tuple[str, ...]] = _default("groups")
    routes: tuple[Mapping[str, Any], ...] = BY_NAME["routes"].default
    base_url: str = BY_NAME["base_url"].default
    timeout: float = BY_NAME["timeout"].default
    dedup_window: float = BY_NAME["dedup_window"].default
    repeat_interval: float | None = BY_NAME["repeat_interval"].default
    remind_every: float = BY_NAME["remind_every"].default
    group_wait: float = BY_NAME["group_wait"].default
    tps: float = BY_NAME["tps"].default
    per_recipient_limit: int | None = BY_NAME["per_recipient_limit"].default
    per_recipient_period: float = BY_NAME["per_recipient_period"].default
    max_segments: int = BY_NAME["max_segments"].default
    store: str = BY_NAME["store"].default
    replica_wait: float = BY_NAME["replica_wait"].default
    level: str | int = BY_NAME["level"].default
    queue_size: int = BY_NAME["queue_size"].default
    max_windows: int = BY_NAME["max_windows"].default
    max_pending: int = BY_NAME["max_pending"].default
    fallback: tuple[str, ...] = BY_NAME["fallback"].default
    fallback_after: float = BY_NAME["fallback_after"].default
    secondary: Mapping[str, str] | None = field(default=BY_NAME["secondary"].default, repr=False)
    dead_retention: float = BY_NAME["dead_retention"].default

    def __repr__(self) -> str:
        return f"Settings({self.masked_url()!r})"

    # -- sources (sslsms_notify.config.sources reads and checks; the record cross-checks) --
    @classmethod
    def from_url(cls, url: str) -> Settings:
        """Parse and check an ``sslsms://`` URL; a ValueError names the bad part."""
        return cls(**url_values(url)).cross_checked()

    @classmethod
    def from_toml(cls, path: str | Path) -> Settings:
        """``url``, ``[gateway]`` sid/api_token/base_url/timeout, ``[pipeline]`` options,
        ``[groups]``, ``[[routes]]``; every key checked against its rule."""
        return cls(**file_values(path)).cross_checked(where=str(path))

    @classmethod
    def from_env(cls) -> Settings:
        """``SSLSMS_API_TOKEN``, ``SSLSMS_SID``, ``SSLSMS_BASE_URL``, ``SSLSMS_TO``."""
        return cls(**env_values(SETTINGS)).cross_checked()

    @classmethod
    def load(cls, url: str | None = None, config: str | Path | None = None) -> Settings:
        """``--url`` first; else the config file (``--config``, ``SSLSMS_CONFIG`` or the
        default path, if it exists); else ``SSLSMS_URL``; else ``SSLSMS_*`` variables.

        With both a config file and ``SSLSMS_URL``, the file wins and the URL only
        supplies the credentials if the file has none: the token can live in the
        environment while the rest lives in the file.
        """
        return cls.load_with_source(url, config)[0]

    @classmethod
    def load_with_source(
        cls, url: str | None = None, config: str | Path | None = None
    ) -> tuple[Settings, str]:
        """:meth:`load`, and where the settings came from (for ``config check``)."""
        if url is not None:
            return cls.from_url(url), "--url"
        env_url = os.environ.get("SSLSMS_URL", "").strip()
        chosen = config or os.environ.get("SSLSMS_CONFIG", "").strip() or None
        try:
            path = Path(chosen or DEFAULT_CONFIG_PATH).expanduser()
        except RuntimeError:  # no home directory to expand "~" in
            path = None
        if chosen or (path is not None and path.is_file()):
            assert path is not None
            values = file_values(path)
            if env_url and not values.get("api_token"):
                try:
                    from_env = url_values(env_url)
                except BAD_VALUE as exc:
                    raise ConfigError(f"SSLSMS_URL: {exc}") from None
                values.update(api_token=from_env["api_token"], sid=from_env["sid"])
            return cls(**values).cross_checked(where=str(path)), str(path)
        if env_url:
            try:
                return cls.from_url(env_url), "SSLSMS_URL"
            except BAD_VALUE as exc:
                raise ConfigError(f"SSLSMS_URL: {exc}") from None
        if any(os.environ.get(s.env, "").strip() for s in SETTINGS if s.env):
            try:
                return cls(**env_values(SETTINGS)).cross_checked(where="environment"), "environment"
            except (InvalidValue, InvalidMsisdnError) as exc:
                raise ConfigError(str(exc)) from None
        raise NoConfiguration(
            f"no configuration: pass an {SCHEME}:// URL (--url), set SSLSMS_URL, "
            f"or write {DEFAULT_CONFIG_PATH}"
        )

    @staticmethod
    def sources(url: str | None = None, config: str | Path | None = None) -> list[tuple[str, str]]:
        """Every configuration source present, in the order :meth:`load` tries them, with
        its part: ``used``, ``credentials`` (``SSLSMS_URL``'s token and SID under a file
        that has none) or ``shadowed`` (present, and ignored because another one wins).

        ``config check`` and every ``send`` that does not deliver say it, so that a file
        left from an earlier step cannot silently win over ``SSLSMS_URL``.
        """
        present: list[str] = []
        if url is not None:
            present.append("--url")
        chosen = config or os.environ.get("SSLSMS_CONFIG", "").strip() or None
        path: Path | None = None
        with suppress(RuntimeError):  # no home directory to expand "~" in
            path = Path(chosen or DEFAULT_CONFIG_PATH).expanduser()
        if chosen or (path is not None and path.is_file()):
            present.append(str(path))
        env_url = os.environ.get("SSLSMS_URL", "").strip()
        if env_url:
            present.append("SSLSMS_URL")
        if any(os.environ.get(s.env, "").strip() for s in SETTINGS if s.env):
            present.append("environment")
        parts = []
        for position, source in enumerate(present):
            part = "used" if position == 0 else "shadowed"
            if source == "SSLSMS_URL" and position == 1 and present[0] not in ("--url", "environment"):
                with suppress(Exception):  # an unreadable file is reported by load(), not here
                    if not file_values(Path(present[0])).get("api_token"):
                        part = "credentials"
            parts.append((source, part))
        return parts

    # -- checks and outputs ------------------------------------------------------
    def validated(self, *, where: str = "") -> Settings:
        """Every field checked against its rule (and normalised), for values given as
        keywords; then the cross-checks of :meth:`cross_checked`. (The sources check
        each value as it enters and only cross-check.)"""
        with _naming(where):
            self._require_credentials()
            checked = replace(self, **{s.name: s.check(s.name, getattr(self, s.name)) for s in SETTINGS})
        return checked.cross_checked(where=where)

    def cross_checked(self, *, where: str = "") -> Settings:
        """The checks no single value can make: credentials present, routes naming groups
        that exist. ``where`` (a file, ``environment``) leads any error."""
        with _naming(where):
            self._require_credentials()
            groups = self.all_groups()
            for index, route in enumerate(self.routes):
                for key in ("groups", "escalate_to"):
                    names = route.get(key) or ()
                    for one in ",".join(names).split(",") if not isinstance(names, str) else names.split(","):
                        one = one.strip()
                        if one and one not in groups and not looks_like_number(one):
                            raise InvalidValue(
                                f"routes[{index}].{key}",
                                shown(one),
                                f"no such group (groups: {', '.join(sorted(groups)) or 'none defined'})",
                            )
        return self

    def _require_credentials(self) -> None:
        for name in ("api_token", "sid"):
            if getattr(self, name) in ("", None):
                raise ConfigError(
                    f"{name} is missing: give a URL ({SCHEME}://SID:API_TOKEN@NUMBER) "
                    f"or set [gateway] {name} in the TOML file"
                )

    def all_groups(self) -> dict[str, tuple[str, ...]]:
        groups = dict(self.groups)
        if self.recipients:
            groups.setdefault("default", self.recipients)
        return groups

    def client(self, **kwargs: Any) -> GatewayClient:
        return GatewayClient(self.api_token, self.sid, base_url=self.base_url, timeout=self.timeout, **kwargs)

    def notifier(self, client: GatewayClient | None = None, **overrides: Any) -> Any:
        from ..alerting.notifier import Notifier

        options: dict[str, Any] = {"groups": self.all_groups(), "routes": self.routes}
        options.update({name: getattr(self, name) for name in PIPELINE_FIELDS})
        if self.secondary:  # a second account: its own client, the primary's timeout
            options["secondary"] = GatewayClient(
                self.secondary["api_token"],
                self.secondary["sid"],
                base_url=self.secondary["base_url"],
                timeout=self.timeout,
            )
        options.update(overrides)
        return Notifier(client or self.client(), **options)

    def masked_url(self) -> str:
        return self.url(privacy=True)

    def url(self, *, privacy: bool = False) -> str:
        """The one URL that gives these settings back (groups and routes excepted:
        they only exist in a TOML file). ``privacy``: every credential masked."""
        token = MASK if privacy else quote(self.api_token, safe="")
        path = "/".join(quote(n, safe="+") for n in self.recipients)
        args = []
        for setting in SETTINGS:
            if not setting.url_arg or setting.name == "recipients":
                continue
            value = getattr(self, setting.name)
            if value == setting.default:
                continue
            text = as_text(value)
            if privacy and setting.holds_url:
                text = mask_url(text)
            args.append(f"{setting.url_arg}={quote(text, safe=':/*')}")
        query = ("?" + "&".join(args)) if args else ""
        return f"{SCHEME}://{quote(self.sid, safe='')}:{token}@{path}{query}"

    def describe(self) -> dict[str, Any]:
        """The effective configuration, every credential masked (``config check``)."""
        described: dict[str, Any] = {"url": self.masked_url()}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if setting.secret:
                value = MASK
            elif setting.holds_url:
                value = [mask_url(v) for v in value] if isinstance(value, tuple) else mask_url(str(value))
            elif setting.name == "groups":
                value = {k: _group(v) for k, v in self.all_groups().items()}
            elif setting.name == "routes":
                value = [dict(r) for r in value]
            elif isinstance(value, tuple):
                value = list(value)
            described[setting.name] = value
        return described


def _group(numbers: tuple[str, ...]) -> Any:
    """A group as ``config check`` shows it: its numbers, or its table when it has quiet hours."""
    quiet = getattr(numbers, "quiet", None)
    return list(numbers) if quiet is None else {"numbers": list(numbers), **quiet.describe()}


@contextmanager
def _naming(where: str) -> Iterator[None]:
    """A bad value or a missing one as one ConfigError line, led by ``where``."""
    try:
        yield
    except BAD_VALUE as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


# The registry and the fields must agree: a new setting is a declaration AND a field.
if tuple(f.name for f in fields(Settings)) != tuple(BY_NAME):
    raise RuntimeError("sslsms_notify.config: SETTINGS and the Settings fields differ")
