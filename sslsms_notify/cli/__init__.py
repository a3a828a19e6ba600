"""``sslsms-notify``: send alerts from scripts, run the emulator, inspect the outbox.

Every input gets one clear line: a bad option, URL argument or TOML key is refused
where it enters (``<field>=<value>: <rule>``); an unexpected internal error prints one
line and suggests ``--debug`` for the traceback. No traceback reaches the user otherwise.

This package is the ``main`` group and its error handling; each command group lives in
its own module (``send``, ``serve``, ``heartbeat`` with ``ack``, ``outbox``, ``silence_cmd``,
``config_cmd``, ``segments``, ``emulator_cmd`` with ``demo``, ``apprise_cmd``), the input checks they share in
``inputs``. Exit codes and outcome words come from :mod:`sslsms_notify.outcomes`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from ..extras import MissingExtra
from ..outcomes import ExitCode
from ..severity import SEVERITIES, SEVERITY_ALIASES
from ..validation import LOG_LEVELS
from . import apprise_cmd, config_cmd, emulator_cmd, heartbeat, outbox, segments, send, serve, silence_cmd
from .common import CONTEXT, DEBUG_HINT, InputError, State, Unreachable, one_line, setup_logging

__all__ = [
    "LOG_LEVELS",
    "SEVERITIES",
    "SEVERITY_ALIASES",
    "ExitCode",
    "InputError",
    "Unreachable",
    "main",
]

#: click >= 8.2 raises this for a group called without a command (it prints the help)
_NoArgsIsHelp: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_Never", (click.UsageError,), {})
)


class _Main(click.Group):
    """The command group, with errors printed as one line and tracebacks only with ``--debug``."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args = _debug_first(sys.argv[1:] if args is None else list(args))
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort as exc:
            if isinstance(exc.__cause__, KeyboardInterrupt):  # Ctrl-C
                click.echo("interrupted", err=True)
                sys.exit(ExitCode.INTERRUPTED)
            click.echo("Aborted.", err=True)
            sys.exit(ExitCode.ERROR)
        except _NoArgsIsHelp as exc:  # a group alone: its help is the answer
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except MissingExtra as exc:  # an optional part this command needs is not installed
            click.echo(f"Error: {exc}", err=True)
            sys.exit(ExitCode.BAD_INPUT)
        except BrokenPipeError:
            # `sslsms-notify outbox list | head`: the reader left; nothing to say, and
            # nothing more to write (Python's flush at exit would fail again)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(ExitCode.ERROR)
        except Exception as exc:
            if State.debug:
                raise
            click.echo(
                f"Error: internal error: {type(exc).__name__}: {one_line(str(exc))} ({DEBUG_HINT})",
                err=True,
            )
            sys.exit(ExitCode.ERROR)
        sys.exit(result if isinstance(result, int) else 0)


def _debug_first(args: list[str]) -> list[str]:
    """``--debug`` anywhere before ``--`` counts, as the main option it is (people add it last)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]


@click.group(cls=_Main, context_settings=CONTEXT)
@click.option(
    "--debug",
    is_flag=True,
    help="Show the library's log (hidden otherwise), and tracebacks of internal errors.",
)
@click.version_option(package_name="sslsms-notify")
def main(debug: bool) -> None:
    """Alerts to SMS through the SSL Wireless Push SMS API v3.

    Configure with --url, the SSLSMS_URL environment variable, or a TOML file
    (default ~/.config/sslsms-notify/config.toml). Shell completion:
    eval "$(_SSLSMS_NOTIFY_COMPLETE=bash_source sslsms-notify)".
    """
    State.debug = debug
    setup_logging(debug)


for _command in (
    send.send,
    serve.serve,
    heartbeat.heartbeat,
    heartbeat.ack,
    outbox.outbox,
    silence_cmd.silence,
    config_cmd.config,
    segments.segments,
    emulator_cmd.emulator,
    emulator_cmd.demo,
    apprise_cmd.apprise_group,
):
    main.add_command(_command)
