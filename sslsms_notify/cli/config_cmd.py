"""``sslsms-notify config check``: the configuration, validated and shown with credentials masked."""

from __future__ import annotations

import json
import sys

import click

from ..config import Settings, mask_url
from ..outcomes import ExitCode
from .common import CONTEXT, InputError, Unreachable, exit_codes, one_line
from .inputs import BOTH_SOURCES, cli_store, configuration_options, open_store


@click.group(context_settings=CONTEXT)
def config() -> None:
    """Inspect the configuration."""


@config.command("check", context_settings=CONTEXT)
@configuration_options
@click.option("--json", "as_json", is_flag=True)
@exit_codes(
    {
        ExitCode.DELIVERED: "valid",
        ExitCode.BAD_INPUT: "invalid (one line: the field, the value and the rule)",
        ExitCode.UNREACHABLE: "the store does not answer (one line; nothing else is printed)",
    },
    inline=True,
)
def config_check(url: str | None, config_path: str | None, as_json: bool) -> None:
    """Validate the configuration, check the store answers, print it with every credential masked.

    "store" is the store the CLI uses: the configured one, or, for memory, the
    CLI's SQLite file of this gateway account.

    {exit_codes}

    \b
    Examples:
      sslsms-notify config check --config ./sslsms.toml
      sslsms-notify config check --url "sslsms://SID:TOKEN@01712345678?dedup=600" --json
    """
    if url is not None and config_path is not None:
        raise InputError(BOTH_SOURCES)
    try:
        settings, where = Settings.load_with_source(url, config_path)
    except ValueError as exc:
        click.echo(f"invalid configuration: {one_line(str(exc))}", err=True)
        sys.exit(ExitCode.BAD_INPUT)
    store = cli_store(settings)
    if settings.store != "memory":  # it must answer before anything is called OK
        from ..stores import StoreUnavailableError

        backend = open_store(settings.store, "store")
        try:
            backend.check()
        except StoreUnavailableError as exc:
            raise Unreachable(str(exc)) from None
        finally:
            backend.close()
    described = settings.describe()
    described["store"] = mask_url(store)
    if store != settings.store:
        described["configured_store"] = settings.store
    if as_json:
        click.echo(json.dumps(described, indent=2, ensure_ascii=False))
        return
    click.echo(f"configuration OK ({where})")
    for name, value in described.items():
        if name == "configured_store":
            continue
        if name == "store" and store != settings.store:
            value = f"{value} (the CLI's file for this account; the configuration says {settings.store})"
        click.echo(f"  {name}: {value}")
