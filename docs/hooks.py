"""mkdocs hooks: each marker of a page becomes a table of what the code declares, never a copy.

``<!-- settings -->``, ``<!-- relay-settings -->``: ``sslsms_notify.config.reference_rows``;
``<!-- metrics -->``: ``relay.metrics.METRICS``; ``<!-- stats -->``: ``alerting.stats.STATS_KEYS``;
``<!-- dispatch-policy -->``: ``DispatchPolicy``'s ``Attributes:`` (griffe reads them as the
API reference does); ``<!-- exit-codes -->``, ``<!-- outcomes -->``: ``outcomes.ExitCode`` and
``Outcome`` (and ``cli.common.documented_exit_codes``); ``<!-- cli-help COMMAND -->``,
``<!-- public-names -->``, ``<!-- version -->``. What cannot be rendered fails the ``--strict`` build, with no
hand-written fallback: a table that cannot drift is the point.
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!--\s*([a-z][a-z-]*)((?:\s+[a-z][a-z-]*)*)\s*-->")
CHANGELOG_RELEASE = re.compile(r"^## \[(?P<version>[^\]]+)\] - (?P<date>\d{4}-\d{2}-\d{2})\s*$", re.MULTILINE)

_cache: dict[str, str] = {}


def _fail(marker: str, reason: str) -> PluginError:
    return PluginError(f"docs/hooks.py: cannot render <!-- {marker} -->: {reason}")


def _code(text: str) -> str:
    """Plain text as HTML: escaped, with ``double`` or `single` backtick spans as <code>."""
    spans = r"``(.+?)``|`([^`]+)`"
    return re.sub(spans, lambda m: f"<code>{m[1] or m[2]}</code>", html.escape(text, quote=False))


def _cells(tag: str, row: list[str]) -> str:
    return "".join(f"<{tag}>{cell}</{tag}>" for cell in row)


def _table(headers: list[str], rows: list[list[str]], ids: list[str]) -> str:
    """An HTML table of HTML cells in a ``generated`` block, which docs/stylesheets/extra.css
    fits to the page without breaking an identifier; blank lines around it for Markdown."""
    body = [f'<tr id="{i}">{_cells("td", row)}</tr>' for i, row in zip(ids, rows, strict=True)]
    head = f'<div class="generated"><table><thead><tr>{_cells("th", headers)}</tr></thead><tbody>'
    return "\n".join(["", head, *body, "</tbody></table></div>", ""])


# -- <!-- version -->, the changelog, <!-- public-names --> ---------------------------------
def render_version() -> str:
    from sslsms_notify import __version__

    return __version__


def changelog_versions(text: str) -> list[str]:
    """The release versions of a Keep a Changelog file, newest first."""
    return [m.group("version") for m in CHANGELOG_RELEASE.finditer(text)]


def check_changelog() -> None:
    """CHANGELOG.md's newest release must be the package's version (the CLI and the wheel say it)."""
    path, version = ROOT / "CHANGELOG.md", render_version()
    releases = changelog_versions(path.read_text(encoding="utf-8")) if path.is_file() else []
    if releases[:1] != [version]:
        raise PluginError(
            f"docs/hooks.py: CHANGELOG.md's newest release heading ('## [X.Y.Z] - YYYY-MM-DD') is "
            f"{releases[0] if releases else 'missing'}; sslsms_notify.__version__ is {version}"
        )


@cache
def _griffe() -> Any:
    import griffe

    return griffe.load("sslsms_notify", search_paths=[str(ROOT), *sys.path])


def render_public_names() -> str:
    """``sslsms_notify.__all__``, each an autoref: a name no reference page renders fails the build."""
    import sslsms_notify

    lines = ["", "| Name | Kind | Documented at |", "|---|---|---|"]
    for name in sslsms_notify.__all__:
        if name == "__version__":
            lines.append(f"| `__version__` | attribute | the version string, `{render_version()}` |")
            continue
        member = _griffe().members.get(name)
        if member is None:
            raise _fail("public-names", f"sslsms_notify.__all__ names {name!r}, which griffe cannot find")
        target = member.final_target if member.is_alias else member
        lines.append(f"| [`{name}`][{target.path}] | {target.kind.value} | `{target.path}` |")
    return "\n".join(lines) + "\n"


# -- <!-- settings -->, <!-- relay-settings -->: the settings registry -----------------------
def render_settings(section: str = "") -> str:
    """One row per declared setting: its name; its meaning and rule, then where it is set."""
    from sslsms_notify import config

    marker = f"{section}-settings" if section else "settings"
    reference_rows = getattr(config, "reference_rows", None)
    if not callable(reference_rows):
        raise _fail(marker, "sslsms_notify.config.reference_rows() does not exist")
    rows = reference_rows(config.RELAY_SETTINGS) if section == "relay" else reference_rows()
    cells = []
    for row in rows:
        if not row.doc.strip():
            raise _fail(marker, f"setting {row.name!r} has no description")
        where = [f"<span>Default {_code(row.default)}</span>"] + [
            f"<span>{label} <code>{html.escape(value)}</code></span>"
            for label, value in (("URL", row.url_arg), ("TOML", row.toml_key), ("Environment", row.env))
            if value
        ]
        cells.append(
            [f"<code>{row.name}</code>", f'{_code(row.doc)}<span class="where">{" · ".join(where)}</span>']
        )
    ids = [f"{section or 'setting'}-{r.name}" for r in rows]
    return _table(["Setting", "Meaning, rule and where to set it"], cells, ids)


# -- <!-- dispatch-policy -->, <!-- stats -->, <!-- metrics --> -------------------------------
def render_dispatch_policy() -> str:
    from dataclasses import fields

    from sslsms_notify.alerting.dispatch import DispatchPolicy

    sections = _griffe()["alerting.dispatch.DispatchPolicy"].docstring.parse("google")
    docs = {a.name: a.description for s in sections if s.kind.value == "attributes" for a in s.value}
    names, default = [f.name for f in fields(DispatchPolicy)], DispatchPolicy()
    if set(docs) != set(names):
        raise _fail("dispatch-policy", f"DispatchPolicy's Attributes: describe {sorted(docs)}, not {names}")
    rows = [[f"<code>{n}</code>", f"<code>{getattr(default, n):g}</code>", _code(docs[n])] for n in names]
    headers = ["<code>DispatchPolicy</code> field", "Default", "Meaning"]
    return _table(headers, rows, [f"dispatch-{n}" for n in names])


def stats_keys() -> dict[str, tuple[str, str]]:
    """``Notifier.stats()`` key -> (kind, meaning): ``STATS_KEYS`` of alerting/stats.py."""
    from sslsms_notify.alerting.stats import STATS_KEYS

    return dict(STATS_KEYS)


def render_stats() -> str:
    rows = [[f"<code>{key}</code>", kind, _code(doc)] for key, (kind, doc) in stats_keys().items()]
    return _table(["Key", "Kind", "Meaning"], rows, [f"stats-{key}" for key in stats_keys()])


def render_metrics() -> str:
    from sslsms_notify.relay.metrics import METRICS

    rows = []
    for m in METRICS:
        labels = (" by " + ", ".join(f"<code>{label}</code>" for label in m.labels)) if m.labels else ""
        rows.append([f"<code>{m.exported}</code>", f"{m.kind}{labels}: {_code(m.help)}"])
    return _table(["Metric", "Meaning"], rows, [f"metric-{m.exported}" for m in METRICS])


# -- <!-- exit-codes -->, <!-- cli-help COMMAND --> ------------------------------------------
def _commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, click command) for every command of the CLI, groups first, in help order."""
    import click

    from sslsms_notify.cli import main

    def walk(group: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        for name in group.list_commands(click.Context(group)):
            command = group.get_command(click.Context(group), name)
            if command is not None and not command.hidden:
                yield (*path, name), command
                if isinstance(command, click.Group):
                    yield from walk(command, (*path, name))

    yield from walk(main, ())


def render_exit_codes() -> str:
    """Each ``ExitCode``, its meaning and the outcomes ``send`` reports with it; then the
    codes other commands state in their help (the table their help is written from)."""
    from sslsms_notify.cli.common import documented_exit_codes
    from sslsms_notify.outcomes import ExitCode, Outcome

    codes = sorted(ExitCode)
    if not codes or any(not c.meaning.strip() for c in codes):
        raise _fail("exit-codes", "every ExitCode needs a meaning")
    said = {
        c: " ".join(f"<code>{o}</code>" for o in Outcome if o.reported and o.exit_code is c) for c in codes
    }
    rows = [[f"<code>{int(c)}</code>", f"<code>{c.name}</code>", _code(c.meaning), said[c]] for c in codes]
    headers = ["Exit code", "<code>ExitCode</code>", "Meaning for <code>send</code>", "<code>outcome</code>"]
    out = [_table(headers, rows, [f"exit-{int(c)}" for c in codes])]
    stated = [(path, documented_exit_codes(cmd)) for path, cmd in _commands() if path != ("send",)]
    lines = [
        f"- `sslsms-notify {' '.join(path)}`: " + ", ".join(f"`{int(c)}` {_md(m)}" for c, m in table.items())
        for path, table in stated
        if table
    ]
    return "\n".join([*out, "\nOther commands state their exit codes in their help:\n", *lines, ""])


def render_outcomes() -> str:
    """Every outcome ``send`` reports (``--json``'s ``outcome``): success first, errors last."""
    from sslsms_notify.outcomes import Outcome

    order = lambda o: (o.exit_code != 0, o.exit_code == 1, o.exit_code)  # noqa: E731
    reported = sorted((o for o in Outcome if o.reported), key=order)
    if any(not o.meaning.strip() for o in reported):
        raise _fail("outcomes", "every reported Outcome needs a meaning")
    rows = [[f"<code>{o}</code>", f"<code>{int(o.exit_code)}</code>", _code(o.meaning)] for o in reported]
    return _table(["<code>outcome</code>", "Exit code", "Meaning"], rows, [f"outcome-{o}" for o in reported])


def _md(text: str) -> str:
    """Text for a Markdown line: nothing that Markdown would take as markup."""
    return text.replace("*", r"\*").replace("_", r"\_").replace("<", "&lt;")


def render_cli_help(path: tuple[str, ...]) -> str:
    from click.testing import CliRunner

    from sslsms_notify.cli import main

    if path not in {p for p, _ in _commands()}:
        raise _fail(f"cli-help {' '.join(path)}", f"sslsms-notify has no command {' '.join(path)!r}")
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="sslsms-notify", terminal_width=100)
    if result.exit_code != 0:
        raise _fail(f"cli-help {' '.join(path)}", f"--help exited {result.exit_code}: {result.output}")
    return f"\n```text\n$ sslsms-notify {' '.join(path)} --help\n{result.output.rstrip()}\n```\n"


def leaf_commands() -> list[tuple[str, ...]]:
    """Commands a user runs (groups' subcommands, not the groups themselves)."""
    import click

    return [p for p, c in _commands() if not isinstance(c, click.Group)]


# -- the hooks -------------------------------------------------------------------------------
RENDERERS: dict[str, Callable[[], str]] = {
    "settings": render_settings,
    "relay-settings": lambda: render_settings("relay"),
    "exit-codes": render_exit_codes,
    "outcomes": render_outcomes,
    "metrics": render_metrics,
    "version": render_version,
    "stats": render_stats,
    "dispatch-policy": render_dispatch_policy,
    "public-names": render_public_names,
}


def render_marker(name: str, args: tuple[str, ...] = ()) -> str:
    """What a marker becomes (cached for the build)."""
    key = " ".join((name, *args))
    if key not in _cache:
        if name == "cli-help" and args:
            _cache[key] = render_cli_help(args)
        elif name in RENDERERS and not args:
            _cache[key] = RENDERERS[name]()
        else:
            known = ", ".join(sorted(RENDERERS))
            raise PluginError(
                f"docs/hooks.py: unknown marker <!-- {key} --> (known: {known}, cli-help COMMAND)"
            )
    return _cache[key]


def replace_markers(markdown: str, where: str = "") -> str:
    """``markdown`` with every marker replaced by what it renders; a page with ``cli-help``
    markers must have one for every command."""
    described = {tuple(m.group(2).split()) for m in MARKER.finditer(markdown) if m.group(1) == "cli-help"}
    missing = [" ".join(p) for p in leaf_commands() if p not in described] if described else []
    if missing:
        lacking = ", ".join(f"'sslsms-notify {m}'" for m in missing)
        raise PluginError(
            f"docs/hooks.py: {where or 'the CLI page'} describes no {lacking} (add <!-- cli-help COMMAND -->)"
        )
    return MARKER.sub(lambda m: render_marker(m.group(1), tuple(m.group(2).split())), markdown)


def on_pre_build(config: Any, **kwargs: Any) -> None:
    _cache.clear()
    _griffe.cache_clear()
    check_changelog()


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    return replace_markers(markdown, page.file.src_uri)
