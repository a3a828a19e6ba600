"""``sslsms-notify silence add | list | expire``: silences on the shared store, from a shell."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click

from ..outcomes import ExitCode
from .common import CONTEXT, InputError, Unreachable, exit_codes, one_line
from .inputs import answering_store, configuration_options, store_spec

if TYPE_CHECKING:
    from ..alerting.silences import SilenceInfo

#: how long ``silence expire`` waits for the end SMS it sends itself
EXPIRE_WAIT = 15.0

_store_option = click.option(
    "--store",
    help="Store URL (default: the configured one, else the CLI's SQLite file of the gateway "
    "account the configuration names: the state send uses).",
)


@click.group(context_settings=CONTEXT)
@exit_codes(
    {
        ExitCode.DELIVERED: "done",
        ExitCode.BAD_INPUT: "bad input (a bad matcher, a duration over 30 days, an unknown id, a bad "
        "--store, no account to find the state file by)",
        ExitCode.UNREACHABLE: "the store does not answer, or cannot share a silence now (Redis "
        "unreachable: writes would stay on this host)",
    },
    inline=True,
)
def silence() -> None:
    """Hold back alerts on purpose; when a silence ends, each group gets one SMS of what it held.

    A silence lives in the store, so every process on it (applications, cron jobs, relays)
    holds what it matches: use the store the producers use (--store, or the configuration's).

    \b
    Matchers (all must match), as in Alertmanager:
      name=value  name!=value  name=~regex  name!~regex   (regex anchored at both ends)
    Names: text, source, key, severity, group, tag (any tag), and any label of a webhook
    alert (alertname, instance...). Quote a value with spaces: 'alertname="Disk full"'.

    {exit_codes}
    """


@silence.command("add", context_settings=CONTEXT)
@click.argument("matchers", nargs=-1, required=True, metavar="MATCHER...")
@click.option(
    "--for",
    "duration",
    required=True,
    metavar="DURATION",
    help="How long: 30m, 2h, 1d, 1h30m (at most 30d).",
)
@click.option("--comment", default="", help="Why; the SMS that ends the silence starts with it.")
@configuration_options
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print the silence as JSON.")
def silence_add(
    matchers: tuple[str, ...],
    duration: str,
    comment: str,
    url: str | None,
    config_path: str | None,
    store: str | None,
    as_json: bool,
) -> None:
    """Add a silence; prints its id.

    \b
    Examples:
      sslsms-notify silence add 'source=~"app\\.db.*"' --for 2h --comment "db migration"
      sslsms-notify silence add alertname=DiskFull instance=~'db[12]:.*' --for 30m
      ID=$(sslsms-notify silence add severity=warning group=managers --for 1d)
    """
    from ..alerting.silences import add_silence, check_comment, parse_duration, parse_matcher, parse_matchers

    try:
        for text in matchers:
            parse_matcher(text, "MATCHER")
        parse_matchers(matchers, "MATCHER...")
        parse_duration(duration, "--for")
        check_comment(comment, "--comment")
    except ValueError as exc:
        raise InputError(str(exc)) from None
    info = _on_store(store, url, config_path, lambda store: add_silence(store, matchers, duration, comment))
    _warn_unknown_groups(matchers, url, config_path)
    if as_json:
        click.echo(json.dumps(info.as_json(), ensure_ascii=False))
        return
    click.echo(info.id)
    click.echo(f"silenced until {_when(info.ends_at)}: {', '.join(info.matchers)}", err=True)


@silence.command("list", context_settings=CONTEXT)
@configuration_options
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print the silences as JSON.")
def silence_list(url: str | None, config_path: str | None, store: str | None, as_json: bool) -> None:
    """List the active silences: id, when each ends, alerts held so far, matchers, comment.

    \b
    Example:  sslsms-notify silence list --json
    """
    from ..alerting.silences import list_silences

    found = _on_store(store, url, config_path, list_silences)
    if as_json:
        click.echo(json.dumps([s.as_json() for s in found], ensure_ascii=False))
        return
    if not found:
        click.echo("no active silences")
        return
    for info in found:
        comment = f"  # {info.comment}" if info.comment else ""
        click.echo(
            f"{info.id}  ends {_when(info.ends_at)}  held {info.held}  {', '.join(info.matchers)}{comment}"
        )


@silence.command("expire", context_settings=CONTEXT)
@click.argument("silence_id", metavar="ID")
@configuration_options
@_store_option
def silence_expire(silence_id: str, url: str | None, config_path: str | None, store: str | None) -> None:
    """End a silence now; its end SMS go out at once.

    With a configuration that names the gateway (--url, --config, SSLSMS_URL...), this
    command sends them itself; otherwise the next process on the store does (a relay,
    an application, the next send).

    \b
    Example:  sslsms-notify silence expire k3m9x2pq7d
    """
    from ..alerting.silences import UnknownSilenceError, expire_silence

    def expire(backend: Any) -> SilenceInfo:
        try:
            return expire_silence(backend, silence_id)
        except UnknownSilenceError as exc:
            raise InputError(str(exc)) from None

    spec = store_spec(store, url, config_path)
    info = _on_store(spec, None, None, expire)
    if not info.held:
        click.echo(f"expired {info.id}: it held nothing, so no SMS")
        return
    groups = len(info.groups)
    told = f"expired {info.id}: {info.held} alert{'s' if info.held != 1 else ''} held for {groups} group"
    click.echo(told + ("s" if groups != 1 else "") + _send_end_sms(spec, url, config_path))


def _warn_unknown_groups(matchers: tuple[str, ...], url: str | None, config_path: str | None) -> None:
    """``group=X`` naming no group of the configuration holds nothing here: say so (it may be
    another process's group, so it is a warning, not a refusal)."""
    from ..alerting.silences import parse_matcher
    from ..config import Settings

    try:
        groups = Settings.load(url, config_path).all_groups()
    except ValueError:
        return
    for text in matchers:
        matcher = parse_matcher(text)
        if matcher.name == "group" and matcher.op == "=" and matcher.value not in groups:
            known = ", ".join(sorted(groups)) or "none"
            click.echo(f"warning: {matcher} names no group of this configuration (groups: {known})", err=True)


def _send_end_sms(spec: str, url: str | None, config_path: str | None) -> str:
    """Run the pipeline on the store until the end SMS are out (the rest of the report line)."""
    from ..config import Settings

    try:
        settings = Settings.load(url, config_path)
    except ValueError:  # no configuration, or not one naming the gateway: someone else sends them
        return "; its SMS go out from the next process on the store (a relay, an application, send)"
    from .inputs import open_notifier

    notifier = open_notifier(settings, settings.all_groups(), spec)
    try:
        done = notifier.flush(EXPIRE_WAIT)
        sent = notifier.stats()["hold_summaries"]
    finally:
        notifier.close(0.5)
    if not sent:
        return "; another process on the store sent its SMS"
    return f"; {sent} end SMS {'sent' if done else 'queued (the gateway has not taken them yet)'}"


def _on_store(store: str | None, url: str | None, config_path: str | None, work: Any) -> Any:
    """``work(store)`` on the store the command names; a store that cannot share a silence
    now is one line (exit 6), bad input another (exit 2)."""
    from ..stores.base import StoreUnavailableError

    backend = answering_store(store, url, config_path)
    try:
        return work(backend)
    except StoreUnavailableError as exc:
        raise Unreachable(one_line(str(exc))) from None
    except click.ClickException:
        raise
    except ValueError as exc:
        raise InputError(one_line(str(exc))) from None
    finally:
        backend.close()


def _when(timestamp: float) -> str:
    """``2026-12-06 14:30 (in 1h59m)``: local time, and how far off."""
    left = max(0, int(timestamp - time.time()))
    hours, rest = divmod(left, 3600)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{rest // 60}m{rest % 60:02d}s"]
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(timestamp))} (in {''.join(parts)})"
