"""Optional parts and the extra that brings each: one clear line when one is missing.

The library, the logging handler and ``sslsms-notify send`` need none of these. The
relay and the emulator's HTTP server need a web server and Prometheus' client, the
Redis store needs redis-py, the apprise plugin needs apprise.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: module -> (extra, what needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "uvicorn": ("relay", "the relay and the emulator's HTTP server"),
    "prometheus_client": ("relay", "the relay and its /metrics"),
    "redis": ("redis", "the Redis store and the relay on Redis"),
    "apprise": ("apprise", "the apprise plugin, its installer and the fallback channel"),
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message says which extra brings it."""

    def __init__(self, module: str) -> None:
        extra, what = EXTRAS[module]
        self.extra = extra
        super().__init__(f"{module} is not installed; {what} need it: {install_hint(extra)}")


def install_hint(extra: str) -> str:
    """How to add an extra, from an index or from a checkout of the repository."""
    return f"pip install 'sslsms-notify[{extra}]' (from a checkout: pip install '.[{extra}]')"


def require(module: str) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingExtra` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(module) from None
