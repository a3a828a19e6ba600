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
@click.option(
    "--online",
    is_flag=True,
    help="Also ask the gateway whether it refuses the credentials (a request that cannot send).",
)
@exit_codes(
    {
        ExitCode.DELIVERED: "valid (with --online: the gateway did not refuse the credentials)",
        ExitCode.BAD_INPUT: "invalid (one line: the field, the value and the rule)",
        ExitCode.AUTH: "with --online: the gateway refused the token, SID or this IP (4001-4003)",
        ExitCode.UNREACHABLE: "the store, or with --online the gateway, does not answer (one line)",
    },
    inline=True,
)
def config_check(url: str | None, config_path: str | None, as_json: bool, online: bool) -> None:
    """Validate the configuration, check the store answers, print it with every credential masked.

    "store" is the store the CLI uses: the configured one, or, for memory, the
    CLI's SQLite file of this gateway account.

    {exit_codes}

    --online asks the gateway about the credentials with the cheapest request that
    sends nothing (the API has none that only checks them: a single SMS naming no
    recipient). A refusal (4001-4003) is certain; any other answer only says they were
    not refused: a real SMS proves them.

    \b
    Examples:
      sslsms-notify config check --online
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
    relay_notes = _relay_section(where)
    if relay_notes is not None:
        described["relay"], shadowed_relay = relay_notes
    else:
        shadowed_relay = []
    sources = Settings.sources(url, config_path)
    if online:
        described["gateway"] = _probe(settings)
    refused = online and str(described["gateway"]).startswith("refused")
    if as_json:
        described["sources"] = [{"source": source, "part": part} for source, part in sources]
        click.echo(json.dumps(described, indent=2, ensure_ascii=False))
        sys.exit(ExitCode.AUTH if refused else ExitCode.DELIVERED)
    click.echo(f"configuration OK ({where})")
    for source, part in sources:
        if part == "shadowed":
            click.echo(f"  shadowed: {source} (present, and ignored: {where} wins)")
        elif part == "credentials":
            click.echo(f"  credentials: from {source} ({where} has none)")
    for note in shadowed_relay:
        click.echo(f"  shadowed: {note} (the environment wins)")
    for name, value in described.items():
        if name == "configured_store":
            continue
        if name == "store" and store != settings.store:
            value = f"{value} (the CLI's file for this account; the configuration says {settings.store})"
        click.echo(f"  {name}: {value}")
    if refused:
        sys.exit(ExitCode.AUTH)


def _relay_section(where: str) -> tuple[dict[str, object], list[str]] | None:
    """The config file's ``[relay]`` table checked as ``serve`` will check it, or None
    when there is none; an invalid one is exit 2 here rather than at ``serve``."""
    if where in ("--url", "SSLSMS_URL", "environment"):
        return None
    from ..config import read_section
    from ..relay.settings import RelaySettings

    section = read_section(where, "relay")
    if not section:
        return None
    try:
        relay = RelaySettings.load(section)
    except ValueError as exc:
        click.echo(f"invalid configuration: {one_line(str(exc))}", err=True)
        sys.exit(ExitCode.BAD_INPUT)
    return relay.describe(), RelaySettings.shadowed(section)


def _probe(settings: Settings) -> str:
    """What the gateway says of the credentials, in words (refused..., or not refused...)."""
    from ..gateway.codes import ApiStatus
    from ..gateway.errors import GatewayError

    with settings.client() as client:
        try:
            code = client.probe_credentials()
        except GatewayError as exc:
            raise Unreachable(f"gateway {settings.base_url}: {one_line(str(exc))}") from None
    if code in (ApiStatus.UNAUTHORIZED, ApiStatus.SID_NOT_PERMITTED, ApiStatus.IP_BLACKLISTED):
        return f"refused: [{code}] {ApiStatus(code).meaning}"
    meaning = ApiStatus(code).meaning if ApiStatus.lookup(code) else "an unknown code"
    return (
        f"credentials not refused (it answered [{code}] {meaning} to a request naming no "
        "recipient); only a real SMS proves them"
    )
