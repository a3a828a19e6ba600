"""What a Redis server keeps across a restart: said once, when the store first reaches it."""

from __future__ import annotations

from typing import Any

import redis


def read_persistence(client: Any) -> tuple[str, bool] | None:
    """:func:`describe_persistence` of the server ``client`` talks to (None: it did not answer)."""
    try:
        info: dict[str, Any] = {}
        for section in ("persistence", "memory", "replication"):
            info.update(client.info(section))
        config: dict[str, str] = {}
        try:
            for name in ("appendonly", "appendfsync", "save"):
                config.update(client.config_get(name))
        except redis.ResponseError:  # CONFIG renamed or refused (managed Redis): INFO tells AOF
            config = {}
    except (redis.RedisError, OSError):
        return None
    return describe_persistence(info, config)


def describe_persistence(info: dict[str, Any], config: dict[str, str]) -> tuple[str, bool]:
    """One line on what a restart of this Redis would lose, and whether that is worth a warning.

    ``info``: ``INFO persistence``, ``memory`` and ``replication`` merged; ``config``:
    ``appendonly``, ``appendfsync`` and ``save`` from ``CONFIG GET`` (empty when CONFIG
    is not allowed, as on many managed services: then only AOF is known).
    """
    appendonly = config.get("appendonly")
    aof = appendonly == "yes" if appendonly is not None else bool(info.get("aof_enabled"))
    fsync = config.get("appendfsync")
    save = config.get("save")
    if aof and fsync == "always":
        kept, loses, warn = "persists with AOF (appendfsync always)", "no write it acknowledged", False
    elif aof and fsync == "no":
        kept, loses, warn = (
            "persists with AOF (appendfsync no)",
            "the writes the OS had not flushed to disk yet (often up to 30 s)",
            True,
        )
    elif aof:
        kept = "persists with AOF (appendfsync everysec)" if fsync else "persists with AOF"
        loses, warn = "at most about the last second of writes", False
    elif save:
        spans = [int(s) for s in save.split()[::2] if s.isdigit()]
        longest = f" (up to {max(spans)} s)" if spans else ""
        kept = f"persists with RDB snapshots only (save {save})"
        loses = f"the writes since the last snapshot{longest}: pending SMS, dedup windows, caps"
        warn = True
    elif save == "":
        kept, warn = "does not persist (no AOF, no RDB snapshots)", True
        loses = "everything it holds: pending SMS, dedup windows, caps, digests, group buffers"
    else:
        kept, warn = "persists without AOF; its RDB snapshots are unknown (CONFIG not allowed)", True
        loses = "the writes since its last snapshot, or everything if it takes none"
    line = f"Redis {kept}: a restart loses {loses}"
    if warn:
        line += (
            " (this process re-adds the SMS it knows are pending; configure appendonly yes, "
            "appendfsync everysec)"
        )
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if int(info.get("maxmemory", 0) or 0) > 0 and policy != "noeviction":
        line += f"; maxmemory-policy {policy}: when full, Redis may evict pending SMS (use noeviction)"
        warn = True
    if info.get("role") == "slave":
        line += "; this server is a read-only replica: writes are refused"
        warn = True
    return line, warn
