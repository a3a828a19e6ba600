"""Where the command line tools keep their state: one SQLite file per gateway account."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..paths import state_dir
from .errors import ConfigError

#: the one state file every account shared before state files were per account: kept,
#: never deleted, never used by default
LEGACY_STATE_NAME = "state.db"


def account_id(sid: str, base_url: str) -> str:
    """The gateway account's identity in file names: the first 12 hex digits of
    ``sha256(sid + "\\0" + base_url)`` (the token is not part of it: a new token for
    the same account keeps its state; no secret goes into a file name)."""
    identity = f"{sid.strip()}\0{base_url.strip().rstrip('/')}"
    return hashlib.sha256(identity.encode("utf-8")).hexdigest()[:12]


def _state_dir() -> Path:
    try:
        return state_dir()
    except RuntimeError:  # no HOME and no passwd entry
        raise ConfigError(
            "cannot find a home directory for the default state file: set XDG_STATE_HOME or pass a store"
        ) from None


def default_state_path(sid: str, base_url: str) -> Path:
    """The SQLite file the command line tools use for one gateway account.

    ``$XDG_STATE_HOME/sslsms-notify/state-<account>.db`` (default ``~/.local/state``),
    where ``<account>`` is :func:`account_id` of the SID and the base URL: two accounts
    never share an outbox, so an SMS left by one is never sent through the other.
    Used by ``sslsms-notify send``, ``serve`` and ``outbox``, and by the apprise plugin
    run from the ``apprise`` CLI, so dedup windows and caps of one account hold across
    their invocations.
    """
    return _state_dir() / f"state-{account_id(sid, base_url)}.db"


def default_state_url(sid: str, base_url: str) -> str:
    """:func:`default_state_path` as a store URL."""
    return f"sqlite:///{default_state_path(sid, base_url)}"


def legacy_state_path() -> Path:
    """``$XDG_STATE_HOME/sslsms-notify/state.db``: the one file every account shared
    before the state became per account. Never used by default, never deleted."""
    return _state_dir() / LEGACY_STATE_NAME


def state_files() -> list[Path]:
    """The CLI's state files in the state directory (per-account ones, then the legacy one)."""
    try:
        directory = _state_dir()
        found = sorted(directory.glob("state-*.db"))
        legacy = directory / LEGACY_STATE_NAME
        return [*found, legacy] if legacy.is_file() else found
    except (OSError, ConfigError):  # no directory to look in: no state files
        return []
