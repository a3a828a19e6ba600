"""A redis-py client for a store URL: one server, or the master a set of sentinels names.

- ``redis://``, ``rediss://`` (TLS), ``unix://``: one server, by redis-py's ``from_url``;
- ``redis+sentinel://[[USER]:PASSWORD@]HOST[:26379][,HOST2[:26379]...]/SERVICE_NAME[/DB]``
  (``rediss+sentinel://`` for TLS): through redis-py's Sentinel support. Each new
  connection asks the sentinels where the master is, and a connection to a master
  that became a replica is dropped (redis-py turns its ``READONLY`` into a connection
  error), so the store follows a failover without a restart; the spool takes the
  seconds in between. The password is the master's (and replicas'); the sentinels'
  own, if they have one, is ``?sentinel_password=``.
"""

from __future__ import annotations

from typing import Any

import redis
from redis import sentinel as redis_sentinel

from ...validation import SENTINEL_SCHEMES, SentinelURL, mask_credentials, parse_sentinel_url
from ..base import StoreUnavailableError

# Any: the published stubs lag redis-py (Sentinel.close, from_url's keywords)
_Redis: Any = redis.Redis
_Sentinel: Any = redis_sentinel.Sentinel


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES


def connect(url: str, *, socket_timeout: float) -> tuple[Any, Any]:
    """The client for ``url``, and the :class:`~redis.sentinel.Sentinel` it goes through (if any)."""
    timeouts = {"socket_timeout": socket_timeout, "socket_connect_timeout": socket_timeout}
    try:
        if not is_sentinel_url(url):
            return (
                _Redis.from_url(url, decode_responses=True, health_check_interval=30, **timeouts),
                None,
            )
        parts = parse_sentinel_url(url)
    except ValueError as exc:
        raise StoreUnavailableError(f"store {mask_credentials(url)}: {exc}") from None
    return _through_sentinels(parts, timeouts)


def _through_sentinels(parts: SentinelURL, timeouts: dict[str, float]) -> tuple[Any, Any]:
    options = dict(parts.options)
    tls: dict[str, Any] = {k: v for k, v in options.items() if k.startswith("ssl_")}
    if parts.tls:
        tls["ssl"] = True
    to_sentinels: dict[str, Any] = {**timeouts, **tls}
    if options.get("sentinel_password"):
        to_sentinels["password"] = options["sentinel_password"]
    sentinel = _Sentinel(list(parts.sentinels), sentinel_kwargs=to_sentinels, **timeouts)
    client = sentinel.master_for(
        parts.service,
        db=parts.db,
        username=parts.username,
        password=parts.password,
        decode_responses=True,
        health_check_interval=30,
        **tls,
    )
    return client, sentinel


def check_service(sentinel: Any, service: str) -> str | None:
    """Why the sentinels cannot name a master for ``service`` (None: they can, or none answered).

    A service no answering sentinel monitors is configuration (a typo in the URL), not an
    outage: it would otherwise make every SMS wait in the spool for good.
    """
    monitored: set[str] = set()
    answered = False
    for client in sentinel.sentinels:
        try:
            masters = client.sentinel_masters()
        except (redis.RedisError, OSError):
            continue
        answered = True
        if service in masters:
            return None
        monitored.update(str(name) for name in masters)
    if not answered:
        return None
    known = ", ".join(sorted(monitored)) or "none"
    return f"no sentinel monitors a master named {service!r} (they monitor: {known})"
