"""``sslsms-notify send``: one alert through the pipeline (or a relay), and what became of it."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..config import looks_like_number, mask_url
from ..outcomes import ExitCode, Outcome
from ..severity import SEVERITIES, SEVERITY_ALIASES
from .common import CONTEXT, InputError, exit_codes, one_line
from .inputs import (
    AlertArguments,
    AlertOptions,
    chosen_store,
    configuration_options,
    load_settings,
    open_notifier,
    severity_option,
)

if TYPE_CHECKING:
    from ..alerting.delivery import Delivery
    from ..alerting.notifier import Notifier

#: what ``send`` gives the pipeline to finish up once its own SMS are decided
CLOSE_GRACE = 0.5
#: at most this long for SMS an earlier run left that are due again soon
LEFTOVER_GRACE = 3.0
#: what ``send`` gives the pipeline to put its alert in the store after Ctrl-C
INTERRUPT_GRACE = 0.25
#: what an SMS still pending is told with (a memory store says "lost" instead)
WAITING = "waiting in the outbox: the next run sends it"

#: the intake's verdicts that leave nothing to send now (and lose nothing): told with a reason
NOTHING_TO_SEND = (Outcome.SUPPRESSED, Outcome.THROTTLED, Outcome.BUFFERED, Outcome.SILENCED, Outcome.HELD)

Progress = Callable[[int, int], None]
Report = tuple[ExitCode, dict[str, Any]]


@click.command(context_settings=CONTEXT)
@click.argument("text", required=False)
@click.option(
    "--to",
    "targets",
    multiple=True,
    metavar="NUMBER|GROUP",
    help="A phone number or a configured group (comma lists too); repeat for several. "
    "Digits, +, spaces, dashes, dots and parentheses make a number; anything else names a group.",
)
@click.option(
    "--to-file",
    type=click.Path(dir_okay=False),
    help="A file of phone numbers, one per line; blank lines and # comments are skipped.",
)
@click.option(
    "--severity",
    default="error",
    show_default=True,
    type=click.Choice([*SEVERITIES, *SEVERITY_ALIASES], case_sensitive=False),
    callback=severity_option,
    help="Any case; warn, err, crit and fatal are aliases (as in the relay API).",
)
@click.option("--key", help="Identity for dedup (default: derived from the text).")
@click.option("--source", default="", help="Service or check name shown in the SMS.")
@configuration_options
@click.option(
    "--store",
    help="State shared between runs (default: the configured store, else a SQLite file "
    "per gateway account in ~/.local/state/sslsms-notify).",
)
@click.option(
    "--timeout",
    default="30",
    show_default=True,
    metavar="SECONDS",
    help="Seconds to wait for delivery (0 < SECONDS <= 3600).",
)
@click.option(
    "--relay",
    envvar="SSLSMS_RELAY",
    metavar="URL",
    help="Hand the alert to a relay (sslsms-notify serve) instead of the gateway; "
    "its token comes from SSLSMS_RELAY_TOKEN. Default: SSLSMS_RELAY.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@exit_codes(title="Exit codes (about the SMS this run created, never about others in the outbox)")
def send(
    text: str | None,
    targets: tuple[str, ...],
    to_file: str | None,
    severity: str,
    key: str | None,
    source: str,
    url: str | None,
    config_path: str | None,
    store: str | None,
    timeout: str,
    relay: str | None,
    as_json: bool,
) -> None:
    """Send TEXT (or standard input) through the alert pipeline, and wait for it.

    {exit_codes}

    \b
    Configuration: --url, else --config, else SSLSMS_CONFIG or the default file, else
    SSLSMS_URL. --url and --config cannot be combined (--url is a whole configuration
    and cannot hold groups or routes): a config file without a token takes it from
    SSLSMS_URL instead.

    \b
    State: without --store and without a configured store, dedup windows, caps and
    the outbox live in a SQLite file per gateway account (SID and base URL), so an
    SMS one account left is never sent through another.

    \b
    With --relay (or SSLSMS_RELAY), the alert goes to a relay, which holds the
    gateway token and the shared state; this machine needs only SSLSMS_RELAY_TOKEN.
    The same exit codes apply to what the relay reports for this alert.

    \b
    With group_wait set, the alert waits to be sent with the other alerts of its
    group. If the group's SMS is due within --timeout, send waits for it and reports
    its delivery; otherwise it exits 0 with outcome "buffered": the alert is in the
    store and the next run (or any long-running process on the store) sends it.

    \b
    Examples:
      sslsms-notify send --to oncall "db1: disk 95% full"
      df -h | sslsms-notify send --to 01712345678 --severity warning
      sslsms-notify send --to-file oncall.txt --json "deploy finished"
      sslsms-notify send --to oncall --key disk-full/db1 "disk 95% full on db1"
      SSLSMS_RELAY_TOKEN=... sslsms-notify send --relay http://relay:8026 --to oncall "db1 down"
    """
    _take_sigint()
    arguments = AlertArguments(text, targets, to_file, severity, key, source, timeout)
    if relay:
        _send_via_relay(relay, arguments, as_json)
    where: str | None = None  # the configuration used, once loaded
    try:
        options = arguments.options()
        settings, where = load_settings(url, config_path)
        state = chosen_store(store, settings)
        chosen, message = arguments.recipients_and_text(settings.all_groups())
        groups = settings.all_groups() or {"cli": tuple(t for t in chosen if looks_like_number(t))}
        notifier = open_notifier(settings, groups, state)
    except click.ClickException as exc:
        _refused(exc, as_json, _configuration_used(where, url, config_path) if where else {})
    show_progress = len(chosen) > 100 and not as_json and sys.stderr.isatty()
    deadline = time.monotonic() + options.wait
    try:
        with _progress_bar(show_progress) as progress:
            code, payload = _send(
                notifier, message, severity, options, chosen, deadline, progress, show_status=not as_json
            )
    except KeyboardInterrupt:
        _interrupted(notifier, as_json)
    except BaseException:
        notifier.close(CLOSE_GRACE)
        raise
    try:
        notifier.close(_leftover_grace(notifier, deadline) if code == ExitCode.DELIVERED else CLOSE_GRACE)
    except KeyboardInterrupt:  # the outcome is known: stop staying for leftovers, and report it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        notifier.close(INTERRUPT_GRACE)
    payload = {**payload, "requests": notifier.stats().get("requests", 0)}
    if code == ExitCode.UNREACHABLE and not notifier.store.durable:
        payload["error"] = str(payload.get("error", "")).replace(
            WAITING, "lost: a memory store keeps nothing between runs"
        )
    warning = _auth_warning(notifier, payload["outcome"])
    if warning:
        payload["warning"] = warning
    if code != ExitCode.DELIVERED:  # which configuration this was, and which it ignored
        payload.update(_configuration_used(where, url, config_path))
    _finish(code, payload, as_json)


def _configuration_used(where: str, url: str | None, config_path: str | None) -> dict[str, str]:
    from ..config import Settings

    shadowed = [source for source, part in Settings.sources(url, config_path) if part == "shadowed"]
    return {"config": where, **({"shadowed": ", ".join(shadowed)} if shadowed else {})}


def _refused(exc: click.ClickException, as_json: bool, config: dict[str, str] | None = None) -> NoReturn:
    """Input refused before anything was sent: outcome ``rejected``, with the one line."""
    payload = {"outcome": Outcome.REJECTED, "error": one_line(exc.format_message()), **(config or {})}
    _finish(exc.exit_code, payload, as_json)


def _take_sigint() -> None:
    """Ctrl-C (SIGINT) interrupts ``send``, even when it started with SIGINT ignored
    (a shell script's background job inherits SIG_IGN, and Python then never raises
    KeyboardInterrupt: the wait ran to its end). Stopping is safe: the SMS waits in
    the outbox for the next run."""
    try:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # not the main thread (an embedding caller): leave it be
        pass


def _interrupted(notifier: Notifier, as_json: bool) -> NoReturn:
    """Ctrl-C while ``send`` waits: stop at once. The alert goes into the store (a short
    grace), the request under way is abandoned (its SMS are due again, same csms_id)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the close short
    try:
        notifier.close(INTERRUPT_GRACE)
        durable = bool(notifier.store.durable)
    except Exception:
        durable = False
    message = (
        "the SMS waits in the outbox; the next run sends it"
        if durable
        else "the SMS is lost: a memory store keeps nothing between runs"
    )
    _finish(ExitCode.INTERRUPTED, {"outcome": Outcome.INTERRUPTED, "error": message}, as_json)


def _auth_warning(notifier: Notifier, outcome: str) -> str:
    """When this run's SMS did not need the gateway (a repeat, a capped or buffered
    alert) but the gateway refused the credentials for other SMS in this run, say so:
    the exit code alone would hide a wrong token."""
    if outcome not in NOTHING_TO_SEND:
        return ""
    dispatcher = notifier.dispatcher
    if not dispatcher.auth_failed.is_set():
        return ""
    error = f" ({one_line(str(dispatcher.last_error))})" if dispatcher.last_error is not None else ""
    return (
        f"the gateway refused the credentials for other SMS in this run{error}: "
        "check the API token and the SID; those SMS wait in the outbox"
    )


def _send_via_relay(relay: str, arguments: AlertArguments, as_json: bool) -> NoReturn:
    """``send --relay``: the relay decides and sends; we report what it says of this alert."""
    from ..relay.client import send_via_relay

    try:
        options = arguments.options()
        token = os.environ.get("SSLSMS_RELAY_TOKEN", "").strip()
        if not token:
            raise InputError("SSLSMS_RELAY_TOKEN is not set: the relay needs its bearer token")
        chosen, text = arguments.recipients_and_text(None)
        alert: dict[str, Any] = {"text": text, "severity": arguments.severity}
        if options.source:
            alert["source"] = options.source
        if options.key is not None:
            alert["key"] = options.key
        if chosen:
            alert["groups"] = list(dict.fromkeys(chosen))
    except click.ClickException as exc:
        _refused(exc, as_json)
    try:
        result = send_via_relay(relay, token, alert, wait=options.wait)
    except KeyboardInterrupt:
        message = "the relay sends the alert if it took it already; nothing was kept here"
        _finish(ExitCode.INTERRUPTED, {"outcome": Outcome.INTERRUPTED, "error": message}, as_json)
    payload: dict[str, Any] = {"outcome": result.outcome, "relay": mask_url(relay)}
    if "sms" in result.detail:
        payload.update(result.detail["sms"])
    if result.error:
        payload["error"] = one_line(result.error)
    _finish(Outcome.exit_code_of(result.outcome), payload, as_json)


def _leftover_grace(notifier: Notifier, deadline: float) -> float:
    """How long to stay for SMS an earlier run left in the outbox, once ours are delivered.

    They are not this run's business (its outcome is already known), but "the next
    run sends them" is the promise of exit 6: SMS due within a few seconds get that
    long; SMS backing off for longer wait for a later run.
    """
    try:
        due = notifier.store.outbox_next_due()
        if due is None:
            return CLOSE_GRACE
        left = min(LEFTOVER_GRACE, deadline - time.monotonic())
        return max(CLOSE_GRACE, left) if due - notifier.store.now() <= left else CLOSE_GRACE
    except Exception:
        return CLOSE_GRACE


@contextmanager
def _progress_bar(show: bool) -> Iterator[Progress | None]:
    """A progress bar on a terminal for large sends; nothing when piped."""
    if not show:
        yield None
        return
    bar: Any = None
    shown = 0

    def update(done: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            bar = click.progressbar(length=total, label="sending", file=sys.stderr)
            bar.__enter__()
        bar.update(done - shown)
        shown = done

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


@contextmanager
def _status_line(
    notifier: Notifier, ticket: Any, progress: Progress | None, show: bool
) -> Iterator[Progress | None]:
    """On a terminal, one line saying what the SMS wait for (a retry, its reason, when next),
    rewritten as it changes and cleared at the end; nothing when piped or with --json."""
    if not show or not sys.stderr.isatty():
        yield progress
        return
    from ..alerting.delivery import waiting_for

    shown = ""
    looked = 0.0

    def watch(done: int, total: int) -> None:
        nonlocal shown, looked
        if progress is not None:
            progress(done, total)
        if time.monotonic() - looked < 1.0:
            return
        looked = time.monotonic()
        text = waiting_for(notifier, ticket.csms_ids) or ""
        if text != shown:
            click.echo(f"\r\033[K{text}", err=True, nl=False)
            shown = text

    try:
        yield watch
    finally:
        if shown:
            click.echo("\r\033[K", err=True, nl=False)


def _send(
    notifier: Notifier,
    text: str,
    severity: str,
    options: AlertOptions,
    chosen: list[str],
    deadline: float,
    progress: Progress | None = None,
    show_status: bool = False,
) -> Report:
    from ..alerting.delivery import await_group, deliver

    since = notifier.store.now()
    try:
        ticket = notifier.submit(
            text, severity=severity, key=options.key, source=options.source, groups=chosen or None
        )
    except ValueError as exc:
        return ExitCode.BAD_INPUT, {"outcome": Outcome.REJECTED, "error": one_line(str(exc))}
    with _status_line(notifier, ticket, progress, show_status) as watch:
        delivery = deliver(notifier, ticket, deadline, watch)
    if delivery.status is Outcome.BUFFERED:
        from ..alerting.alert import Alert, Severity

        names = notifier.router.group_names(
            Alert(text, Severity.parse(severity), options.source, groups=tuple(chosen) or None)
        )
        if time.monotonic() + notifier.group_wait > deadline:
            return ExitCode.DELIVERED, {
                "outcome": Outcome.BUFFERED,
                "reason": f"goes out with the group's SMS after group_wait={notifier.group_wait:g}s "
                "(sent by the next run, or any long-running process on the store)",
            }
        await_group(notifier, delivery, names, since, deadline)
    return report(delivery)


def report(delivery: Delivery) -> Report:
    """The exit code and report of one alert's SMS: :attr:`Delivery.outcome
    <sslsms_notify.alerting.delivery.Delivery.outcome>`, with its counts and why."""
    outcome = delivery.outcome
    counts = {
        "sms": delivery.delivered + delivery.failed + delivery.pending,
        "delivered": delivery.delivered,
        "failed": delivery.failed,
        "pending": delivery.pending,
        "throttled": delivery.throttled,
    }
    reason = delivery.reason
    if outcome is Outcome.DELIVERED:  # partly failed or pending: said, and still delivered
        payload: dict[str, Any] = {"outcome": outcome, **counts}
        if reason:
            payload["error"] = reason
        return outcome.exit_code, payload
    if outcome in NOTHING_TO_SEND:
        return outcome.exit_code, {"outcome": outcome, "reason": outcome.meaning, **counts}
    if outcome is Outcome.UNROUTED:
        error = f"{outcome.meaning}: pass --to, or add a route"
    elif outcome is Outcome.RATE_LIMITED:
        error = f"{delivery.rate_limited} ({WAITING})"
    elif outcome is Outcome.UNREACHABLE and delivery.pending:
        error = f"{reason} ({WAITING})"
    elif outcome is Outcome.ERROR:
        error = reason or str(delivery.status)
    else:  # rejected, auth_failed, unreachable before the store took it
        error = reason
    return outcome.exit_code, {"outcome": outcome, "error": error, **counts}


def _finish(code: int, payload: dict[str, Any], as_json: bool) -> NoReturn:
    """The outcome: one line (on stdout when delivered, else on stderr), or one JSON
    object; a ``warning`` is a second line, on stderr."""
    if as_json:
        click.echo(json.dumps(payload, ensure_ascii=False))
    else:
        words = ("outcome", "error", "reason", "warning")
        details = ", ".join(f"{k}={v}" for k, v in payload.items() if k not in words)
        error = payload.get("error") or payload.get("reason")
        line = f"{payload['outcome']}: {error}" if error else f"{payload['outcome']}:"
        if details:
            line += f" ({details})" if error else f" {details}"
        click.echo(line, err=code != ExitCode.DELIVERED)
        if payload.get("warning"):
            click.echo(f"warning: {payload['warning']}", err=True)
    sys.exit(code)
