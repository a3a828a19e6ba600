"""``sslsms-notify serve``: the relay, an HTTP intake and the timers for every producer."""

from __future__ import annotations

import sys

import click

from ..config import ConfigError, mask_url
from ..extras import require
from ..outcomes import ExitCode

#: the names ``serve --log-level`` takes (any case), as ``[relay] log_level`` does
from ..validation import LOG_LEVELS
from .common import CONTEXT, InputError, State, exit_codes, setup_logging
from .inputs import chosen_store, configuration_options, load_settings, open_notifier


@click.command(context_settings=CONTEXT)
@click.option(
    "--listen",
    envvar="SSLSMS_RELAY_LISTEN",
    metavar="HOST:PORT",
    help="Where to listen (default [relay] listen, else 127.0.0.1:8026: loopback only).",
)
@configuration_options
@click.option(
    "--store",
    help="The shared store (default: the configured one, else the CLI's SQLite file "
    "of this gateway account).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="What goes to stderr (default [relay] log_level, else info: warnings such as dead "
    "letters, gateway failures and misrouted alerts, plus start and recovery lines).",
)
@exit_codes(
    {
        ExitCode.DELIVERED: "stopped with every SMS delivered",
        ExitCode.BAD_INPUT: "bad configuration (no token, bad [relay] value, address in use)",
        ExitCode.UNREACHABLE: "stopped with SMS undelivered: they wait in the store for the next process",
    }
)
def serve(
    listen: str | None, url: str | None, config_path: str | None, store: str | None, log_level: str | None
) -> None:
    """Run the relay: an HTTP intake and the pipeline's timers for every producer.

    \b
    Endpoints (all but /healthz and /readyz need "Authorization: Bearer <token>"):
      POST /v1/alerts          {"text": ..., "severity": ..., "key": ..., "groups": [...]}, or a list
      POST /v1/alertmanager    Prometheus Alertmanager's webhook
      POST /v1/grafana         Grafana's webhook contact point
      POST /v1/heartbeats/NAME a heartbeat's ping ({"every": "24h"}); GET /v1/heartbeats
      POST /v1/ack/CODE        acknowledge an alert that would escalate
      GET  /healthz            liveness: store and gateway state (503: nothing takes alerts)
      GET  /readyz             readiness: ok, or spooling while Redis is away (503: down)
      GET  /metrics            Prometheus text format
    Tokens: [relay] tokens in the config file, or SSLSMS_RELAY_TOKENS (comma-separated).
    Summaries, digests, group_wait, retries, missed heartbeats and escalations of every
    producer on the store fire on time here. SIGTERM: finish requests under way, close
    within [relay] shutdown_timeout; what is not delivered stays in the store.
    Connections: at most [relay] max_connections (default: from the file-descriptor
    limit), closed when silent for idle_timeout or when a request takes longer than
    read_timeout to arrive.

    {exit_codes}

    \b
    Example:
      SSLSMS_RELAY_TOKENS=$(openssl rand -hex 24) sslsms-notify serve --config relay.toml
      (the Relay page of the documentation, docs/doors/relay.md, has a config, an
      Alertmanager receiver, a Grafana contact point and a systemd unit)
    """
    from dataclasses import replace as _replace

    from ..config import read_section

    require("uvicorn")  # the relay's optional parts: one line naming the extra if missing
    require("prometheus_client")
    from ..relay.server import RelayServer
    from ..relay.settings import RelaySettings

    settings, where = load_settings(url, config_path)
    try:
        section = read_section(where, "relay") if where not in ("--url", "SSLSMS_URL", "environment") else {}
        relay = RelaySettings.load(section)
        if listen is not None:
            relay = _replace(relay, listen=listen).checked()
        if not relay.tokens:
            raise ValueError(
                "no relay token: set [relay] tokens in the config file or SSLSMS_RELAY_TOKENS "
                "(producers send 'Authorization: Bearer <token>')"
            )
    except (ValueError, ConfigError) as exc:
        raise InputError(str(exc)) from None
    # a daemon's log is its only voice: warnings (dead letters, gateway failures, misrouted
    # alerts, SMS left at shutdown) show at the default level
    setup_logging(State.debug, level=(log_level or relay.log_level).lower())
    state = chosen_store(store, settings)
    notifier = open_notifier(settings, settings.all_groups(), state)
    try:
        server = RelayServer(notifier, relay)
    except ValueError as exc:  # max_connections beyond what RLIMIT_NOFILE allows
        notifier.close(0)
        raise InputError(str(exc)) from None
    try:
        if not relay.loopback:
            click.echo(f"warning: listening on {relay.listen}, beyond this host; put TLS in front", err=True)
        click.echo(f"relay on http://{relay.listen}, store {mask_url(state)}", err=True)
        delivered = server.serve_forever()
    except OSError as exc:
        notifier.close(0)
        raise InputError(str(exc)) from None
    sys.exit(ExitCode.DELIVERED if delivered else ExitCode.UNREACHABLE)
