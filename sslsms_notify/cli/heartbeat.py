"""``sslsms-notify heartbeat NAME --every 24h``: a dead man's switch for cron jobs; ``ack CODE``.

``heartbeat NAME ...`` is short for ``heartbeat ping NAME ...``; ``heartbeat list`` and
``heartbeat delete NAME`` look after them. ``ack CODE`` acknowledges an alert that would
escalate. Each works on the store (the configured one, else the CLI's SQLite file of the
gateway account) or, with ``--relay``, through a relay's API.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from ..config import mask_url
from ..durations import format_duration
from ..outcomes import ExitCode
from .common import CONTEXT, InputError, exit_codes, one_line
from .inputs import answering_store, chosen_store, configuration_options, load_settings, open_notifier

#: how long ``heartbeat`` waits for its ``[RECOVERED]`` SMS by default
RECOVERED_WAIT = "10"


class _HeartbeatGroup(click.Group):
    """``heartbeat NAME ...`` is ``heartbeat ping NAME ...`` (a cron line stays short)."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["ping", *args]
        return super().resolve_command(ctx, args)


_relay_option = click.option(
    "--relay",
    envvar="SSLSMS_RELAY",
    metavar="URL",
    help="Through a relay (sslsms-notify serve) instead of the store; its token comes from "
    "SSLSMS_RELAY_TOKEN. Default: SSLSMS_RELAY.",
)
_store_option = click.option(
    "--store",
    help="The store (default: the configured one, else the CLI's SQLite file of the gateway account).",
)
_RELAY_CODES = {
    ExitCode.AUTH: "with --relay: the relay refused SSLSMS_RELAY_TOKEN",
    ExitCode.RELAY_UNREACHABLE: "with --relay: the relay was not reached (nothing was recorded)",
}


@click.group(cls=_HeartbeatGroup, context_settings=CONTEXT)
def heartbeat() -> None:
    """Heartbeats: something that must ping on time, or someone is paged.

    \b
    'heartbeat NAME --every 24h' is short for 'heartbeat ping NAME --every 24h'.
    Missed heartbeats are found by the process running the timers on the store:
    the relay (sslsms-notify serve), or an application with a Notifier on it.
    """


@heartbeat.command("ping", context_settings=CONTEXT)
@click.argument("name")
@click.option(
    "--every", metavar="DURATION", help="How often it pings: 24h, 15m, 90s... (a new heartbeat needs it)."
)
@click.option(
    "--grace",
    metavar="DURATION",
    help="How late a ping may be before it pages (default: a tenth of --every, at most 1h).",
)
@click.option(
    "--to",
    "groups",
    multiple=True,
    metavar="GROUP",
    help="Groups to page when it is missed (repeat for several; default: the heartbeat's, "
    "or the routes for source 'heartbeat').",
)
@configuration_options
@_store_option
@_relay_option
@click.option(
    "--timeout",
    default=RECOVERED_WAIT,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the [RECOVERED] SMS, when the ping ends a silence.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the heartbeat as JSON.")
@exit_codes(
    {
        ExitCode.DELIVERED: "the ping is recorded",
        ExitCode.BAD_INPUT: "bad input (name, --every, --grace, --to, the configuration), "
        "or a new heartbeat without --every",
        **_RELAY_CODES,
        ExitCode.UNREACHABLE: "the store does not answer",
    }
)
def ping(
    name: str,
    every: str | None,
    grace: str | None,
    groups: tuple[str, ...],
    url: str | None,
    config_path: str | None,
    store: str | None,
    relay: str | None,
    timeout: str,
    as_json: bool,
) -> None:
    """Record a ping of heartbeat NAME; a NAME silent past every + grace pages once.

    The silence pages '[MISSED] NAME: no heartbeat since 02:00 (every 24h)' once; the
    next ping pages '[RECOVERED] ...' once (and this command waits for that SMS up to
    --timeout). --every, --grace and --to stay as the last ping set them.

    {exit_codes}

    \b
    Examples (cron):
      0 2 * * *  backup.sh && sslsms-notify heartbeat ping backup --every 24h --to oncall
      */5 * * * * check.sh && sslsms-notify heartbeat ping queue-check --every 5m --grace 2m
      SSLSMS_RELAY_TOKEN=... sslsms-notify heartbeat ping backup --every 24h --relay http://relay:8026
    """
    from ..validation import Number

    wait = Number(0, 3600, unit="seconds").check("--timeout", timeout, text=True) if timeout else 0.0
    if relay:
        body: dict[str, Any] = {}
        if every is not None:
            body["every"] = every
        if grace is not None:
            body["grace"] = grace
        if groups:
            body["groups"] = _names(groups)
        answer = _relay(relay, "POST", f"/v1/heartbeats/{name}", body)
        _finish_ping(answer, as_json)
    from ..alerting.heartbeats import describe_heartbeat

    settings, _where = load_settings(url, config_path)
    notifier = open_notifier(settings, settings.all_groups(), chosen_store(store, settings))
    try:
        try:
            result = notifier.heartbeat(
                name, every=every, grace=grace, groups=_names(groups) if groups else None
            )
        except ValueError as exc:
            raise InputError(one_line(str(exc))) from None
        detail = describe_heartbeat(result.heartbeat)
        payload: dict[str, Any] = {"status": result.status, **detail}
        if result.csms_ids:
            from ..alerting.delivery import wait_for_sms

            outcomes, _end = wait_for_sms(notifier, result.csms_ids, time.monotonic() + wait)
            payload["recovered_sms"] = dict(Counter(str(state) for state in outcomes.values()))
    finally:
        notifier.close(0.5)
    _finish_ping_payload(payload, as_json)


def _names(groups: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(g.strip() for part in groups for g in part.split(",") if g.strip()))


def _finish_ping(answer: Any, as_json: bool) -> NoReturn:
    if answer.status != 200:
        _relay_failed(answer)
    _finish_ping_payload(answer.body, as_json)


def _finish_ping_payload(payload: dict[str, Any], as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False))
        sys.exit(ExitCode.DELIVERED)
    every, grace = format_duration(payload["every"]), format_duration(payload["grace"])
    deadline = time.strftime("%Y-%m-%d %H:%M", time.localtime(payload["deadline"]))
    line = f"{payload['name']}: {payload['status']} (every {every}, grace {grace}; "
    line += f"pages {', '.join(payload['groups'])} if silent past {deadline})"
    if payload["status"] == "recovered":
        line += (
            " [RECOVERED] sent"
            if payload.get("recovered_sms", {}).get("delivered")
            else " [RECOVERED] queued"
        )
    click.echo(line)
    sys.exit(ExitCode.DELIVERED)


@heartbeat.command("list", context_settings=CONTEXT)
@configuration_options
@_store_option
@_relay_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def heartbeat_list(
    url: str | None, config_path: str | None, store: str | None, relay: str | None, as_json: bool
) -> None:
    """Every heartbeat: its period, its last ping, and whether it is missed.

    \b
    Example:  sslsms-notify heartbeat list
    """
    if relay:
        answer = _relay(relay, "GET", "/v1/heartbeats")
        if answer.status != 200:
            _relay_failed(answer)
        listed = answer.body.get("heartbeats", [])
    else:
        from ..alerting.heartbeats import describe_heartbeat
        from ..alerting.heartbeats import listed as list_heartbeats

        backend = answering_store(store, url, config_path)
        try:
            listed = [describe_heartbeat(b) for b in backend.transact(list_heartbeats)]
        finally:
            backend.close()
    if as_json:
        click.echo(json.dumps(listed, ensure_ascii=False))
        return
    if not listed:
        click.echo("no heartbeats yet (the first ping of one makes it)")
        return
    now = time.time()
    for beat in listed:
        state = "MISSED" if beat["missed"] else "ok"
        ago = format_duration(max(0, round(now - beat["last_ping"])))
        last = time.strftime("%Y-%m-%d %H:%M", time.localtime(beat["last_ping"]))
        click.echo(
            f"{beat['name']:<24} {state:<6} every {format_duration(beat['every']):<6} "
            f"grace {format_duration(beat['grace']):<6} last ping {last} ({ago} ago)  "
            f"to {','.join(beat['groups'])}"
        )


@heartbeat.command("delete", context_settings=CONTEXT)
@click.argument("name")
@configuration_options
@_store_option
def heartbeat_delete(name: str, url: str | None, config_path: str | None, store: str | None) -> None:
    """Delete heartbeat NAME (a retired job): its silence pages nothing any more.

    \b
    Example:  sslsms-notify heartbeat delete old-backup
    """
    from ..alerting.heartbeats import check_name, forget

    try:
        check_name(name)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    backend = answering_store(store, url, config_path)
    try:
        found = backend.transact(lambda tx: forget(tx, name))
    finally:
        backend.close()
    if not found:
        raise InputError(f"no heartbeat named {name!r} (see 'sslsms-notify heartbeat list')")
    click.echo(f"{name}: deleted")


@click.command(context_settings=CONTEXT)
@click.argument("code")
@configuration_options
@_store_option
@_relay_option
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@exit_codes(
    {
        ExitCode.DELIVERED: "acknowledged (now, or before: nothing more escalates)",
        ExitCode.BAD_INPUT: "refused: no such code (a typo, or it expired), not a code, "
        "or too many wrong codes (try again in a minute)",
        **_RELAY_CODES,
        ExitCode.UNREACHABLE: "the store does not answer",
    }
)
def ack(
    code: str, url: str | None, config_path: str | None, store: str | None, relay: str | None, as_json: bool
) -> None:
    """Acknowledge the alert whose SMS ended with 'ack:CODE': it will not escalate.

    CODE is typed in any case (O reads as 0, I and L as 1). Wrong codes are limited to
    five a minute (per relay client, or for the command line as a whole).

    {exit_codes}

    \b
    Examples:
      sslsms-notify ack 4F2K9M
      SSLSMS_RELAY_TOKEN=... sslsms-notify ack 4F2K9M --relay http://relay:8026
    """
    from ..alerting.escalation import acknowledge, code_rule, normalize_code

    normalized = normalize_code(code)
    if normalized is None:
        raise InputError(f"CODE={code[:20]!r}: {code_rule()}")
    if relay:
        answer = _relay(relay, "POST", f"/v1/ack/{normalized}")
        if answer.status != 200:
            _relay_failed(answer)
        _finish_ack(answer.body, as_json)
    backend = answering_store(store, url, config_path)
    try:
        result = backend.transact(lambda tx: acknowledge(tx, normalized, "cli"))
    finally:
        backend.close()
    if result.status == "limited":
        raise InputError(f"too many wrong codes; try again in {max(1, round(result.retry_after))} s")
    if result.status == "unknown":
        raise InputError(f"CODE={normalized}: no alert waits for this code (a typo, or it expired)")
    _finish_ack(result.as_dict(), as_json)


def _finish_ack(payload: dict[str, Any], as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False))
        sys.exit(ExitCode.DELIVERED)
    alert = payload.get("alert", "")
    if payload["status"] == "acked":
        click.echo(f"acknowledged: {alert}")
    else:
        when = time.strftime("%H:%M", time.localtime(payload.get("closed_at") or 0))
        state = payload.get("state", "closed")
        said = {
            "acked": f"acknowledged already ({payload.get('closed_by')}, {when})",
            "resolved": f"resolved already ({when})",
            "escalated": f"escalated already at {when}; nothing more escalates",
        }.get(state, state)
        click.echo(f"{said}: {alert}")
    sys.exit(ExitCode.DELIVERED)


# -- through a relay -------------------------------------------------------------------------
def _relay(relay: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    from ..relay.client import call_relay

    token = os.environ.get("SSLSMS_RELAY_TOKEN", "").strip()
    if not token:
        raise InputError("SSLSMS_RELAY_TOKEN is not set: the relay needs its bearer token")
    return call_relay(relay, token, method, path, body)


def _relay_failed(answer: Any) -> NoReturn:
    error = one_line(answer.error or f"relay answered {answer.status}")
    if answer.status == 0:
        click.echo(f"Error: {error}" + (" (it may have recorded it)" if answer.unsure else ""), err=True)
        sys.exit(ExitCode.RELAY_UNREACHABLE)
    if answer.status == 401:
        click.echo(f"Error: {error}", err=True)
        sys.exit(ExitCode.AUTH)
    if answer.status in (400, 404, 413, 422, 429):
        click.echo(f"Error: {error}", err=True)
        sys.exit(ExitCode.BAD_INPUT)
    click.echo(f"Error: relay answered {answer.status}: {mask_url(error)}", err=True)
    sys.exit(ExitCode.RELAY_UNREACHABLE)
