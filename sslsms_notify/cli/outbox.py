"""``sslsms-notify outbox list | retry | purge``: the durable outbox, looked at and mended."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..config import ConfigError, legacy_state_path
from ..outcomes import ExitCode
from .common import CONTEXT, InputError, exit_codes
from .inputs import answering_store


@click.group(context_settings=CONTEXT)
@exit_codes(
    {
        ExitCode.DELIVERED: "done",
        ExitCode.BAD_INPUT: "bad input (a bad --store, unknown ids, no account to find the state file by)",
        ExitCode.UNREACHABLE: "the store does not answer",
    },
    inline=True,
)
def outbox() -> None:
    """Inspect, retry or purge the durable outbox.

    Without --store: the configured store, else the CLI's SQLite file of the gateway
    account the configuration names (--url, --config, SSLSMS_URL...).

    {exit_codes}
    """


_store_options = [
    click.option(
        "--store",
        help="Store URL (default: the configured one, else the CLI's SQLite file of the "
        "gateway account the configuration names).",
    ),
    click.option(
        "--url",
        help="sslsms:// URL naming the account (default: the config file, else SSLSMS_URL). "
        "Not with --config.",
    ),
    click.option(
        "--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file. Not with --url."
    ),
]


def _with_store(func: Any) -> Any:
    for option in reversed(_store_options):
        func = option(func)
    return func


@outbox.command("list", context_settings=CONTEXT)
@_with_store
@click.option("--state", type=click.Choice(["pending", "inflight", "dead"]), help="Only this state.")
@click.option("--json", "as_json", is_flag=True)
def outbox_list(
    store: str | None, url: str | None, config_path: str | None, state: str | None, as_json: bool
) -> None:
    """List SMS waiting or given up on.

    \b
    Example:  sslsms-notify outbox list --state dead --json
    """
    from ..stores.base import OutboxState

    backend = answering_store(store, url, config_path)
    try:
        items = backend.outbox_list(OutboxState(state) if state else None)
        counts = backend.outbox_counts()
    finally:
        backend.close()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "csms_id": i.csms_id,
                        "msisdn": i.msisdn,
                        "text": i.text,
                        "state": str(i.state),
                        "attempts": i.attempts,
                        "last_error": i.last_error,
                    }
                    for i in items
                ],
                ensure_ascii=False,
            )
        )
        return
    for item in items:
        click.echo(
            f"{item.csms_id}  {item.state:<8} +{item.msisdn}  tries={item.attempts}  "
            f"{item.text[:60]!r}  {item.last_error}"
        )
    # OutboxCounts.pending counts the SMS in flight too: every SMS still to send
    click.echo(f"{counts.pending} waiting ({counts.inflight} in flight), {counts.dead} dead")
    if store is None:
        _mention_legacy_state()


def _mention_legacy_state() -> None:
    """The one state file every account shared before: kept, and named, never used by default."""
    try:
        legacy = legacy_state_path()
        exists = legacy.is_file()
    except (ConfigError, OSError):
        return
    if exists:
        click.echo(
            f"note: {legacy} is the state file every account shared before state files were "
            f"per account; SMS left there: --store sqlite:///{legacy}",
            err=True,
        )


@outbox.command("retry", context_settings=CONTEXT)
@_with_store
@click.argument("csms_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Every dead letter.")
def outbox_retry(
    store: str | None,
    url: str | None,
    config_path: str | None,
    csms_ids: tuple[str, ...],
    retry_all: bool,
) -> None:
    """Put dead letters back in the queue (same csms_id: never sent twice).

    \b
    Examples:
      sslsms-notify outbox retry 0Pq7xYz1AbCdEfGhIjKl
      sslsms-notify outbox retry --all
    """
    from ..stores.base import OutboxState

    if not csms_ids and not retry_all:
        raise click.UsageError("name CSMS_IDS or pass --all")
    backend = answering_store(store, url, config_path)
    try:
        ids = list(dict.fromkeys(csms_ids))
        if ids:
            found = backend.outbox_get(ids)
            unknown = [i for i in ids if i not in found or found[i].state is not OutboxState.DEAD]
            if unknown:
                raise InputError(f"not dead letters in this outbox: {', '.join(unknown)}")
        if retry_all:
            ids += [i.csms_id for i in backend.outbox_list(OutboxState.DEAD, limit=1_000_000)]
        requeued = backend.outbox_requeue(ids)
        click.echo(
            f"{requeued} requeued; the next run (sslsms-notify send, or a relay on this store) sends them"
            if requeued
            else "0 requeued"
        )
    finally:
        backend.close()


@outbox.command("purge", context_settings=CONTEXT)
@_with_store
@click.option("--state", type=click.Choice(["dead", "pending"]), default="dead", show_default=True)
@click.option("--yes", is_flag=True, help="Do not ask.")
def outbox_purge(store: str | None, url: str | None, config_path: str | None, state: str, yes: bool) -> None:
    """Delete SMS in a state (dead letters by default).

    Asks first on a terminal; without one (a pipe, cron), it refuses unless --yes.

    \b
    Example:  sslsms-notify outbox purge --yes
    """
    from ..stores.base import OutboxState

    if not yes and (sys.stdin is None or not sys.stdin.isatty()):
        raise InputError("refusing to purge without --yes (standard input is not a terminal)")
    backend = answering_store(store, url, config_path)
    try:
        if not yes:
            click.confirm(f"Delete every {state} SMS?", abort=True)
        click.echo(f"{backend.outbox_purge(OutboxState(state))} purged")
    finally:
        backend.close()
