"""One configuration for every door: an ``sslsms://`` URL, a TOML file, or keywords.

    sslsms://{sid}:{api_token}@{msisdn}/{msisdn}/...?base_url=...&dedup=300&tps=10

URL arguments (all optional):
  base_url      gateway address (default https://smsplus.sslwireless.com)
  dedup         dedup window in seconds (0: off)          repeat    summary interval while repeats go on
  group_wait    seconds to gather alerts into one SMS     tps       requests per second to the gateway
  cap           SMS per phone per cap_period (0: no cap)  cap_period seconds (default 3600)
  segments      SMS segments per message (default 2)      store     memory | sqlite:///path | redis://...
  level         minimum logging level for SMSHandler      timeout   HTTP timeout in seconds
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from .gateway.client import DEFAULT_BASE_URL, DEFAULT_TIMEOUT, GatewayClient
from .gateway.msisdn import normalize_msisdn

SCHEME = "sslsms"
DEFAULT_CONFIG_PATH = Path("~/.config/sslsms-notify/config.toml")

_URL_ARGS = {
    "base_url": ("base_url", str),
    "dedup": ("dedup_window", float),
    "repeat": ("repeat_interval", float),
    "group_wait": ("group_wait", float),
    "tps": ("tps", float),
    "cap": ("per_recipient_limit", int),
    "cap_period": ("per_recipient_period", float),
    "segments": ("max_segments", int),
    "store": ("store", str),
    "level": ("level", str),
    "timeout": ("timeout", float),
}


#: Settings fields that are Notifier options of the same name
PIPELINE_FIELDS = (
    "store",
    "dedup_window",
    "repeat_interval",
    "group_wait",
    "tps",
    "per_recipient_limit",
    "per_recipient_period",
    "max_segments",
)


@dataclass(frozen=True)
class Settings:
    api_token: str = field(default="", repr=False)
    sid: str = ""
    recipients: tuple[str, ...] = ()
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    routes: tuple[Mapping[str, Any], ...] = ()
    base_url: str = DEFAULT_BASE_URL
    timeout: float = DEFAULT_TIMEOUT
    dedup_window: float = 300.0
    repeat_interval: float | None = None
    group_wait: float = 0.0
    tps: float = 10.0
    per_recipient_limit: int | None = 10
    per_recipient_period: float = 3600.0
    max_segments: int = 2
    store: str = "memory"
    level: str = "ERROR"

    def __repr__(self) -> str:
        return f"Settings({self.masked_url()!r})"

    # -- sources -------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str) -> Settings:
        parts = urlsplit(url.strip())
        if parts.scheme != SCHEME:
            raise ValueError(f"URL scheme must be {SCHEME}://, not {parts.scheme or 'missing'}://")
        if not parts.username or not parts.password:
            raise ValueError(f"URL must start with {SCHEME}://SID:API_TOKEN@")
        numbers = [unquote(parts.hostname or "")] if parts.hostname else []
        numbers += [unquote(p) for p in parts.path.split("/") if p]
        values: dict[str, Any] = {}
        for name, raw in parse_qsl(parts.query, keep_blank_values=True):
            if name == "to":
                numbers += [n for n in raw.split(",") if n.strip()]
                continue
            if name not in _URL_ARGS:
                known = ", ".join(sorted([*_URL_ARGS, "to"]))
                raise ValueError(f"URL argument {name!r} is unknown (known: {known})")
            attr, kind = _URL_ARGS[name]
            values[attr] = _convert(name, raw, kind)
        if values.get("per_recipient_limit") == 0:
            values["per_recipient_limit"] = None
        return cls(
            api_token=unquote(parts.password),
            sid=unquote(parts.username),
            recipients=tuple(normalize_msisdn(n, field="URL recipient") for n in numbers),
            **values,
        ).validated()

    @classmethod
    def from_toml(cls, path: str | Path) -> Settings:
        """``[gateway]`` sid/api_token/base_url, ``[pipeline]`` options, ``[groups]``, ``[[routes]]``."""
        file = Path(path).expanduser()
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{file}: not valid TOML: {exc}") from None
        base = cls.from_url(data["url"]) if "url" in data else cls()
        gateway = dict(data.get("gateway", {}))
        pipeline = dict(data.get("pipeline", {}))
        unknown = set(data) - {"url", "gateway", "pipeline", "groups", "routes"}
        if unknown:
            raise ValueError(f"{file}: unknown section(s): {', '.join(sorted(unknown))}")
        changes: dict[str, Any] = {}
        for key in ("api_token", "sid", "base_url", "timeout"):
            if key in gateway:
                changes[key] = gateway.pop(key)
        if gateway:
            raise ValueError(f"{file}: [gateway] has unknown key(s): {', '.join(sorted(gateway))}")
        names = {f.name for f in fields(cls)} - {"api_token", "sid", "groups", "routes"}
        for key, value in pipeline.items():
            if key not in names:
                raise ValueError(f"{file}: [pipeline] has unknown key {key!r}")
            changes[key] = tuple(value) if key == "recipients" else value
        if "groups" in data:
            changes["groups"] = {
                name: tuple(normalize_msisdn(n, field=f"groups.{name}[{i}]") for i, n in enumerate(nums))
                for name, nums in data["groups"].items()
            }
        if "routes" in data:
            changes["routes"] = tuple(data["routes"])
        if changes.get("per_recipient_limit") == 0:
            changes["per_recipient_limit"] = None
        return replace(base, **changes).validated()

    @classmethod
    def load(cls, url: str | None = None, config: str | Path | None = None) -> Settings:
        """Flags first, then ``SSLSMS_URL``, then the config file, then ``SSLSMS_*`` variables."""
        if url:
            return cls.from_url(url)
        env_url = os.environ.get("SSLSMS_URL")
        path = Path(config or os.environ.get("SSLSMS_CONFIG") or DEFAULT_CONFIG_PATH).expanduser()
        if config or path.exists():
            settings = cls.from_toml(path)
            return (
                replace(settings, **_credentials_from(cls.from_url(env_url)))
                if env_url and not settings.api_token
                else settings
            )
        if env_url:
            return cls.from_url(env_url)
        if os.environ.get("SSLSMS_API_TOKEN"):
            recipients = os.environ.get("SSLSMS_TO", "")
            return cls(
                api_token=os.environ["SSLSMS_API_TOKEN"],
                sid=os.environ.get("SSLSMS_SID", ""),
                base_url=os.environ.get("SSLSMS_BASE_URL", DEFAULT_BASE_URL),
                recipients=tuple(normalize_msisdn(n) for n in recipients.split(",") if n.strip()),
            ).validated()
        raise ValueError(
            f"no configuration: pass a sslsms:// URL, set SSLSMS_URL, or write {DEFAULT_CONFIG_PATH}"
        )

    # -- checks and outputs ------------------------------------------------------
    def validated(self) -> Settings:
        from .gateway.client import _check_credentials

        _check_credentials(self.api_token, self.sid)
        for name in ("dedup_window", "group_wait", "tps", "per_recipient_period", "timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.tps == 0:
            raise ValueError("tps must be positive")
        if self.max_segments < 1:
            raise ValueError(f"segments must be at least 1, not {self.max_segments}")
        return self

    def all_groups(self) -> dict[str, tuple[str, ...]]:
        groups = dict(self.groups)
        if self.recipients:
            groups.setdefault("default", self.recipients)
        return groups

    def client(self, **kwargs: Any) -> GatewayClient:
        return GatewayClient(self.api_token, self.sid, base_url=self.base_url, timeout=self.timeout, **kwargs)

    def notifier(self, client: GatewayClient | None = None, **overrides: Any) -> Any:
        from .alerting.notifier import Notifier

        options: dict[str, Any] = {"groups": self.all_groups(), "routes": self.routes}
        options.update({name: getattr(self, name) for name in PIPELINE_FIELDS})
        options.update(overrides)
        return Notifier(client or self.client(), **options)

    def masked_url(self) -> str:
        return self.url(privacy=True)

    def url(self, *, privacy: bool = False) -> str:
        token = "****" if privacy else quote(self.api_token, safe="")
        path = "/".join(quote(n, safe="+") for n in self.recipients)
        args = []
        defaults = Settings()
        for name, (attr, _) in _URL_ARGS.items():
            value = getattr(self, attr)
            if value != getattr(defaults, attr):
                args.append(f"{name}={quote(str(0 if value is None else value), safe=':/')}")
        query = ("?" + "&".join(args)) if args else ""
        return f"{SCHEME}://{quote(self.sid, safe='')}:{token}@{path}{query}"

    def describe(self) -> dict[str, Any]:
        """The effective configuration, token masked (``config check``)."""
        return {
            "url": self.masked_url(),
            "sid": self.sid,
            "api_token": "****",
            "base_url": self.base_url,
            "groups": {k: list(v) for k, v in self.all_groups().items()},
            "routes": [dict(r) for r in self.routes],
            **{name: getattr(self, name) for name in PIPELINE_FIELDS},
            "level": self.level,
        }


def _credentials_from(settings: Settings) -> dict[str, Any]:
    return {"api_token": settings.api_token, "sid": settings.sid}


def _convert(name: str, raw: str, kind: type) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"URL argument {name}={raw!r} must be a {kind.__name__}") from None
