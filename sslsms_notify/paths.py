"""Where the tools keep state on this host: ``$XDG_STATE_HOME/sslsms-notify`` (``~/.local/state``)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The directory for the CLI's SQLite state and Redis spools.

    Raises RuntimeError when there is no home directory and no ``XDG_STATE_HOME``.
    """
    base = os.environ.get("XDG_STATE_HOME") or "~/.local/state"
    return Path(base).expanduser() / "sslsms-notify"
