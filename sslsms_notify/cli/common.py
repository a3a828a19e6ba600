"""What every command module shares: click settings, the one-line errors, logging, exit-code help."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from ..config import mask_url
from ..outcomes import ExitCode

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEBUG_HINT = "run with --debug for the traceback"

F = TypeVar("F", bound=Callable[..., Any])


class InputError(click.ClickException):
    """Bad input: one line, exit 2."""

    exit_code = ExitCode.BAD_INPUT


class Unreachable(click.ClickException):
    """A store or gateway that does not answer: one line, exit 6."""

    exit_code = ExitCode.UNREACHABLE


class State:
    """Process-wide switches the ``main`` group sets (``--debug``)."""

    debug = False


def one_line(text: str) -> str:
    """``text`` on one line, every credential of every URL in it masked."""
    return " ".join(mask_url(str(text)).split())


def setup_logging(debug: bool, *, level: str | None = None) -> None:
    """The library's own log lines: none by default (every command reports its outcome
    itself, in one line that carries the reason), everything on stderr with ``--debug``.
    ``level``: lines at or above it on stderr (``serve``, whose log is its only voice),
    uvicorn's and asyncio's too, at WARNING at least (their INFO lines are start-up chatter)."""
    from .. import _log

    _log.losses_reported_elsewhere = True  # each command's outcome line says what was lost
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sslsms-notify: %(levelname)s: %(message)s"))
    if debug:
        threshold = logging.DEBUG
    elif level is not None:
        threshold = logging.getLevelNamesMapping()[level.upper()]
    else:
        handler, threshold = logging.NullHandler(), logging.CRITICAL + 1
    loggers = {"sslsms_notify": threshold}
    if debug:
        loggers["httpx"] = threshold
    if debug or level is not None:
        loggers.update(dict.fromkeys(("uvicorn", "asyncio"), max(threshold, logging.WARNING)))
    for name, at in loggers.items():
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(at)
        logger.propagate = False


# -- exit codes in --help ---------------------------------------------------------------------
#: where a command's help takes its exit-code list
EXIT_CODES_MARKER = "{exit_codes}"
#: the width of the exit-code lines in --help (click keeps \b paragraphs as written)
LIST_WIDTH = 80
INLINE_WIDTH = 78

_documented: dict[Callable[..., Any], dict[ExitCode, str]] = {}


def exit_codes(
    meanings: Mapping[ExitCode, str] | None = None, *, title: str = "Exit codes", inline: bool = False
) -> Callable[[F], F]:
    """Write the command's exit codes into its help, from :class:`~sslsms_notify.outcomes.ExitCode`.

    The docstring's ``{exit_codes}`` line becomes a ``\\b`` paragraph: ``title:`` then one
    ``N  meaning`` line per code (``inline``: ``title: N meaning, N meaning.`` wrapped),
    in the order of ``meanings`` (default: every code with its own meaning, as ``send``
    has them). The docs' exit-code page reads the same table (:func:`documented_exit_codes`).
    Goes under the click decorator, directly on the function.
    """
    table = dict(meanings) if meanings is not None else {code: code.meaning for code in ExitCode}

    def decorate(func: F) -> F:
        _documented[func] = table
        if not func.__doc__:  # python -OO: no help texts at all
            return func
        lines = func.__doc__.splitlines()
        at = [i for i, line in enumerate(lines) if line.strip() == EXIT_CODES_MARKER]
        if len(at) != 1:
            raise ValueError(f"{func.__name__}: its docstring needs one {EXIT_CODES_MARKER} line")
        indent = lines[at[0]][: len(lines[at[0]]) - len(lines[at[0]].lstrip())]
        block = [indent + line if line else line for line in _render(table, title, inline)]
        func.__doc__ = "\n".join([*lines[: at[0]], *block, *lines[at[0] + 1 :]])
        return func

    return decorate


def _render(table: Mapping[ExitCode, str], title: str, inline: bool) -> list[str]:
    if inline:
        text = f"{title}: " + ", ".join(f"{int(code)} {meaning}" for code, meaning in table.items()) + "."
        return ["\b", *textwrap.wrap(text, INLINE_WIDTH, break_on_hyphens=False)]
    lines = ["\b", f"{title}:"]
    for code, meaning in table.items():
        head = f"  {int(code)}  "
        lines += textwrap.wrap(
            meaning,
            LIST_WIDTH,
            initial_indent=head,
            subsequent_indent=" " * len(head),
            break_on_hyphens=False,
        )
    return lines


def documented_exit_codes(command: click.Command) -> dict[ExitCode, str]:
    """The exit codes ``command``'s help lists, with their meanings for it (empty: none listed)."""
    return dict(_documented.get(command.callback, {})) if command.callback is not None else {}
