"""``sslsms-notify``: send alerts from scripts, run the emulator, inspect the outbox."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from .config import DEFAULT_CONFIG_PATH, Settings
from .gateway.errors import AuthError
from .gateway.text import MAX_SMS_CHARS, count_segments, truncate_to_segments

# Exit codes a script can act on.
EXIT_DELIVERED = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_SUPPRESSED = 3
EXIT_THROTTLED = 4
EXIT_AUTH = 5
EXIT_UNREACHABLE = 6

DEFAULT_STATE = Path(os.environ.get("XDG_STATE_HOME", "~/.local/state")) / "sslsms-notify" / "state.db"

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _cli_store(configured: str) -> str:
    """The configured store; a memory store would forget everything between runs, so
    the CLI uses its own SQLite file instead."""
    return configured if configured != "memory" else f"sqlite:///{DEFAULT_STATE.expanduser()}"


def _settings(url: str | None, config: str | None) -> Settings:
    try:
        return Settings.load(url, config)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from None


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="sslsms-notify")
def main() -> None:
    """Alerts to SMS through the SSL Wireless Push SMS API v3.

    Configure with --url, the SSLSMS_URL environment variable, or a TOML file
    (default ~/.config/sslsms-notify/config.toml). Shell completion:
    eval "$(_SSLSMS_NOTIFY_COMPLETE=bash_source sslsms-notify)".
    """


# -- send ---------------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.argument("text", required=False)
@click.option(
    "--to",
    "targets",
    multiple=True,
    metavar="NUMBER|GROUP",
    help="A phone number or a configured group; repeat for several.",
)
@click.option("--to-file", type=click.File("r"), help="A file of numbers, one per line.")
@click.option(
    "--severity",
    default="error",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
)
@click.option("--key", help="Identity for dedup (default: derived from the text).")
@click.option("--source", default="", help="Service or check name shown in the SMS.")
@click.option("--url", envvar="SSLSMS_URL", help="sslsms:// URL (or SSLSMS_URL).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--store", help="State shared between runs (default: a SQLite file in ~/.local/state).")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for delivery.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def send(
    text: str | None,
    targets: tuple[str, ...],
    to_file: Any,
    severity: str,
    key: str | None,
    source: str,
    url: str | None,
    config_path: str | None,
    store: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Send TEXT (or standard input) through the alert pipeline.

    \b
    Exit codes: 0 delivered, 2 rejected input, 3 suppressed as a repeat,
    4 held by a per-phone cap, 5 gateway refused credentials,
    6 gateway unreachable (the SMS stays in the outbox for the next run).

    \b
    Examples:
      sslsms-notify send --to oncall "db1: disk 95% full"
      df -h | sslsms-notify send --to 01712345678 --severity warning
      sslsms-notify send --to-file oncall.txt --json "deploy finished"
    """
    if text is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError("TEXT is missing (give it as an argument or on standard input)")
        text = sys.stdin.read()
    text = text.strip()
    if not text:
        raise click.UsageError("TEXT is empty")
    settings = _settings(url, config_path)
    numbers = list(targets)
    if to_file is not None:
        numbers += [line.strip() for line in to_file if line.strip() and not line.startswith("#")]
    state = store or _cli_store(settings.store)
    try:
        if numbers and not settings.all_groups():
            settings = replace(settings, recipients=())
        groups = settings.all_groups() or {"cli": tuple(n for n in numbers if n not in settings.groups)}
        notifier = settings.notifier(groups=groups, store=state, start=False, close_at_exit=None)
        notifier.alert(text, severity=severity, key=key, source=source, groups=numbers or None)
    except ValueError as exc:
        _finish(EXIT_BAD_INPUT, {"outcome": "rejected", "error": str(exc)}, as_json)
        return
    _deliver(notifier, timeout, as_json, show_progress=len(numbers) > 100)


def _deliver(notifier: Any, timeout: float, as_json: bool, *, show_progress: bool) -> None:
    interactive = show_progress and sys.stderr.isatty() and not as_json
    notifier.tick(force_sweep=True)
    if interactive:
        total = notifier.store_pending() or 1
        with click.progressbar(length=total, label="sending", file=sys.stderr) as bar:
            done = 0
            while not notifier.flush(0.2) and done < total:
                now_done = total - max(notifier.store_pending(), 0)
                bar.update(now_done - done)
                done = now_done
            bar.update(total - done)
    delivered = notifier.flush(timeout)
    stats = notifier.stats()
    last_error = notifier.dispatcher.last_error
    notifier.close(0.5)
    summary = {k: stats[k] for k in ("sent", "suppressed", "throttled", "failed", "pending", "requests")}
    if stats["sent"] and delivered and not stats["failed"]:
        code, outcome = EXIT_DELIVERED, "delivered"
    elif stats["suppressed"] and not stats["sent"] and not stats["pending"]:
        code, outcome = EXIT_SUPPRESSED, "suppressed"
    elif stats["throttled"] and not stats["pending"] and not stats["sent"]:
        code, outcome = EXIT_THROTTLED, "throttled"
    elif stats["failed"] and not stats["pending"]:
        code, outcome = EXIT_BAD_INPUT, "rejected"
    elif isinstance(last_error, AuthError):
        code, outcome = EXIT_AUTH, "auth_failed"
    elif stats["pending"]:
        code, outcome = EXIT_UNREACHABLE, "unreachable"
    else:
        code, outcome = EXIT_DELIVERED, "delivered"
    if last_error is not None and code in (EXIT_AUTH, EXIT_UNREACHABLE):
        summary["error"] = str(last_error)
    _finish(code, {"outcome": outcome, **summary}, as_json)


def _finish(code: int, payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(payload))
    else:
        details = ", ".join(f"{k}={v}" for k, v in payload.items() if k != "outcome")
        click.echo(f"{payload['outcome']}: {details}", err=code != EXIT_DELIVERED)
    sys.exit(code)


# -- segments -------------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.argument("text", required=False)
@click.option("--max-segments", default=2, show_default=True, help="Budget to check against.")
@click.option("--json", "as_json", is_flag=True)
def segments(text: str | None, max_segments: int, as_json: bool) -> None:
    """Show TEXT's encoding, SMS segment count and what a budget would cut.

    \b
    Example:  sslsms-notify segments "সার্ভার ডাউন {db1}"
    """
    if text is None:
        text = sys.stdin.read().rstrip("\n")
    info = count_segments(text)
    cut = truncate_to_segments(text, max_segments) if text else text
    report = {
        "encoding": str(info.encoding),
        "sms_type": info.sms_type,
        "characters": info.characters,
        "units": info.units,
        "segments": info.segments,
        "max_segments": max_segments,
        "too_long_for_gateway": info.characters > MAX_SMS_CHARS,
        "truncated": cut != text,
        "kept": cut,
    }
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(
        f"{info.encoding} ({info.sms_type}), {info.characters} characters, "
        f"{info.units} units, {info.segments} SMS"
    )
    if cut != text:
        click.echo(f"over {max_segments} SMS; would send: {cut}")
    if info.characters > MAX_SMS_CHARS:
        click.echo(f"the gateway rejects texts over {MAX_SMS_CHARS} characters")


# -- config -------------------------------------------------------------------
@main.group(context_settings=CONTEXT)
def config() -> None:
    """Inspect the configuration."""


@config.command("check", context_settings=CONTEXT)
@click.option("--url", envvar="SSLSMS_URL")
@click.option("--config", "config_path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def config_check(url: str | None, config_path: str | None, as_json: bool) -> None:
    """Validate the configuration and print it with the token masked.

    \b
    Example:  sslsms-notify config check --config ./sslsms.toml
    """
    try:
        settings = Settings.load(url, config_path)
        settings.notifier(start=False, close_at_exit=None).close(0)  # routes and groups resolve
    except (ValueError, OSError) as exc:
        click.echo(f"invalid configuration: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    described = settings.describe()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    click.echo(f"configuration OK ({config_path or DEFAULT_CONFIG_PATH if not url else 'URL'})")
    for name, value in described.items():
        click.echo(f"  {name}: {value}")


# -- emulator and demo -------------------------------------------------------------
@main.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8025, show_default=True)
@click.option("--tps", type=int, help="Answer 4031 above this many requests per second.")
@click.option("--daily-quota", type=int, help="Answer 4029 after this many requests a day.")
@click.option("--quiet", is_flag=True, help="Do not print accepted SMS.")
def emulator(host: str, port: int, tps: int | None, daily_quota: int | None, quiet: bool) -> None:
    """Run the gateway emulator; print each SMS it accepts.

    \b
    Token: emulator-token-0123456789   SID: EMULATOR
    Inbox: GET http://HOST:PORT/__emulator/messages
    Example:
      sslsms-notify emulator --port 8025 &
      SSLSMS_URL="sslsms://EMULATOR:emulator-token-0123456789@01712345678?base_url=http://127.0.0.1:8025" \\
        sslsms-notify send "hello"
    """
    from .emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorConfig, EmulatorServer, GatewayEmulator

    gateway = GatewayEmulator(EmulatorConfig(tps_limit=tps, daily_quota=daily_quota))
    if not quiet:
        gateway.subscribe(lambda m: click.echo(m.line()))
    click.echo(f"SSL Push SMS v3 emulator on http://{host}:{port}  (token {DEMO_API_TOKEN}, sid {DEMO_SID})")
    EmulatorServer(gateway, host=host, port=port).serve_forever()


@main.command(context_settings=CONTEXT)
def demo() -> None:
    """Replay an incident through the logging handler on the embedded emulator.

    No account and no network: shows what each on-call phone would receive.
    """
    from .demo import run_demo

    run_demo(click.echo)


# -- outbox -----------------------------------------------------------------------
@main.group(context_settings=CONTEXT)
def outbox() -> None:
    """Inspect, retry or purge the durable outbox."""


def _store(store: str | None, url: str | None, config_path: str | None) -> Any:
    from .stores import open_store

    if store is None:
        try:
            configured = Settings.load(url, config_path).store
        except ValueError:
            configured = "memory"
        store = _cli_store(configured)
    return open_store(store)


_store_options = [
    click.option("--store", help="Store URL (default: the configured one, else the CLI's SQLite file)."),
    click.option("--url", envvar="SSLSMS_URL", hidden=True),
    click.option("--config", "config_path", type=click.Path(dir_okay=False), hidden=True),
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
    """List SMS waiting or given up on."""
    from .stores.base import OutboxState

    backend = _store(store, url, config_path)
    items = backend.outbox_list(OutboxState(state) if state else None)
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
    counts = backend.outbox_counts()
    click.echo(f"{counts.pending} pending, {counts.inflight} in flight, {counts.dead} dead")


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
    """Put dead letters back in the queue (same csms_id: never sent twice)."""
    from .stores.base import OutboxState

    backend = _store(store, url, config_path)
    ids = list(csms_ids)
    if retry_all:
        ids += [i.csms_id for i in backend.outbox_list(OutboxState.DEAD, limit=1_000_000)]
    if not ids:
        raise click.UsageError("name CSMS_IDS or pass --all")
    click.echo(f"{backend.outbox_requeue(ids)} requeued")


@outbox.command("purge", context_settings=CONTEXT)
@_with_store
@click.option("--state", type=click.Choice(["dead", "pending"]), default="dead", show_default=True)
@click.option("--yes", is_flag=True, help="Do not ask.")
def outbox_purge(store: str | None, url: str | None, config_path: str | None, state: str, yes: bool) -> None:
    """Delete SMS in a state (dead letters by default)."""
    from .stores.base import OutboxState

    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete every {state} SMS?", abort=True)
    click.echo(f"{_store(store, url, config_path).outbox_purge(OutboxState(state))} purged")


# -- apprise ----------------------------------------------------------------------
@main.group("apprise", context_settings=CONTEXT)
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

    \b
    Example:
      sslsms-notify apprise install
      apprise -b "db1 down" "sslsms://SID:TOKEN@01712345678"
    """
    from .integrations.apprise import LOADER

    target = Path(plugin_dir).expanduser() / "sslsms.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(LOADER, encoding="utf-8")
    click.echo(f"installed {target}")


if __name__ == "__main__":
    main()
