"""``sslsms-notify apprise install``: the loader that lets the apprise CLI use sslsms:// URLs."""

from __future__ import annotations

from pathlib import Path

import click

from ..extras import require
from .common import CONTEXT, InputError


@click.group("apprise", context_settings=CONTEXT)
def apprise_group() -> None:
    """Use sslsms:// from the apprise CLI and apprise config files."""


@apprise_group.command("install", context_settings=CONTEXT)
@click.option(
    "--path",
    "plugin_dir",
    type=click.Path(file_okay=False),
    default="~/.config/apprise/plugins",
    show_default=True,
    help="An apprise plugin path.",
)
def apprise_install(plugin_dir: str) -> None:
    """Write a one-line loader so the apprise CLI knows sslsms://.

    From the apprise CLI, sslsms:// URLs without store= keep their state in the same
    SQLite file as `sslsms-notify send`, so dedup and caps hold across invocations.

    \b
    Example:
      sslsms-notify apprise install
      apprise -b "db1 down" "sslsms://SID:TOKEN@01712345678"
    """
    require("apprise")  # else one line naming the extra, not a ModuleNotFoundError
    from ..integrations.apprise import LOADER

    try:
        target = Path(plugin_dir).expanduser() / "sslsms.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(LOADER, encoding="utf-8")
    except (OSError, RuntimeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"--path {plugin_dir!r}: cannot write the loader: {reason}") from None
    click.echo(f"installed {target}")
