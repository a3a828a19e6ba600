"""mkdocs hooks: the reference tables are generated from the code at build time, never copied.

A page holds a marker; the build replaces it with a table made from the code:

- ``<!-- settings -->``: every setting, from :func:`sslsms_notify.config.reference_rows`
  (its URL argument, TOML key, environment variable, default and rule);
- ``<!-- relay-settings -->``: the ``[relay]`` section, from the fields of
  :class:`sslsms_notify.relay.settings.RelaySettings` and its docstring's ``Attributes:``;
- ``<!-- dispatch-policy -->``: the dispatcher's pacing, retry and give-up bounds, from
  :class:`sslsms_notify.alerting.dispatch.DispatchPolicy`'s fields and docstring;
- ``<!-- exit-codes -->``: :class:`sslsms_notify.outcomes.ExitCode`, each code with its
  meaning and the outcomes ``send`` reports with it, and the exit codes the other
  commands list (:func:`sslsms_notify.cli.common.documented_exit_codes`), the tables
  their ``--help`` is written from; ``<!-- outcomes -->``: every outcome ``send`` reports,
  from :class:`sslsms_notify.outcomes.Outcome`;
- ``<!-- metrics -->``: what the relay's ``/metrics`` exports, scraped from a real
  :class:`~sslsms_notify.relay.metrics.RelayMetrics` on a Notifier that sends one SMS
  through the in-process emulator;
- ``<!-- cli-help COMMAND -->``: ``sslsms-notify COMMAND --help``, as the CLI prints it;
- ``<!-- public-names -->``: ``sslsms_notify.__all__``, each name linked to its entry
  in the API reference (a name no page documents fails the build);
- ``<!-- stats -->``: the keys of ``Notifier.stats()``, described by the ``#:`` comments
  of :class:`sslsms_notify.alerting.stats.Stats`;
- ``<!-- version -->``: ``sslsms_notify.__version__``.

Anything that cannot be generated fails the build (``mkdocs build --strict`` exits
non-zero): a missing function, a field without a description, an exit code without a
meaning, a marker nobody knows, a CLI command the CLI page does not describe, or a
CHANGELOG.md whose latest release is not the package's version. There is no fallback
to a hand-written table: a table that cannot drift is the point.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!--\s*([a-z][a-z-]*)((?:\s+[a-z][a-z-]*)*)\s*-->")
CHANGELOG_RELEASE = re.compile(r"^## \[(?P<version>[^\]]+)\] - (?P<date>\d{4}-\d{2}-\d{2})\s*$", re.MULTILINE)

_cache: dict[str, str] = {}


def _emulated_client() -> Any:
    """A real GatewayClient on the in-process emulator: no account, no network."""
    from sslsms_notify import GatewayClient
    from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport

    return GatewayClient(
        DEMO_API_TOKEN, DEMO_SID, base_url="http://emulator.local", transport=EmulatorTransport()
    )


def _fail(marker: str, reason: str) -> PluginError:
    return PluginError(f"docs/hooks.py: cannot render <!-- {marker} -->: {reason}")


def _code(text: str) -> str:
    """Plain text for an HTML cell: escaped, with ``double`` or `single` backtick spans as <code>."""
    return re.sub(r"``(.+?)``|`([^`]+)`", _code_span, html.escape(text, quote=False))


def _code_span(match: re.Match[str]) -> str:
    return f"<code>{match.group(1) or match.group(2)}</code>"


def _table(headers: list[str], rows: list[list[str]], ids: list[str] | None = None) -> str:
    """An HTML table (cells are already HTML); blank lines around it for Markdown."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = []
    for index, row in enumerate(rows):
        anchor = f' id="{ids[index]}"' if ids else ""
        body.append(f"<tr{anchor}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return (
        f"\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n"
    )


# -- <!-- version --> ------------------------------------------------------------------------
def render_version() -> str:
    from sslsms_notify import __version__

    return __version__


def changelog_versions(text: str) -> list[str]:
    """The release versions of a Keep a Changelog file, newest first."""
    return [m.group("version") for m in CHANGELOG_RELEASE.finditer(text)]


def check_changelog() -> None:
    """CHANGELOG.md's newest release must be the package's version (the CLI and the wheel say it)."""
    version = render_version()
    path = ROOT / "CHANGELOG.md"
    if not path.is_file():
        raise PluginError("docs/hooks.py: CHANGELOG.md is missing")
    releases = changelog_versions(path.read_text(encoding="utf-8"))
    if not releases:
        raise PluginError("docs/hooks.py: CHANGELOG.md has no '## [X.Y.Z] - YYYY-MM-DD' release heading")
    if releases[0] != version:
        raise PluginError(
            f"docs/hooks.py: CHANGELOG.md's newest release is {releases[0]}, but sslsms_notify.__version__ "
            f"is {version}: add a '## [{version}] - YYYY-MM-DD' section"
        )


# -- <!-- public-names --> -------------------------------------------------------------------
def render_public_names() -> str:
    """``sslsms_notify.__all__``, each linked to where the API reference documents it.

    The links are autorefs: a public name that no reference page renders is an
    unresolved reference, which fails the strict build.
    """
    import griffe

    import sslsms_notify

    package = griffe.load("sslsms_notify", search_paths=[str(ROOT), *sys.path])
    lines = ["", "| Name | Kind | Documented at |", "|---|---|---|"]
    for name in sslsms_notify.__all__:
        if name == "__version__":
            lines.append(f"| `__version__` | attribute | the version string, `{render_version()}` |")
            continue
        member = package.members.get(name)
        if member is None:
            raise _fail("public-names", f"sslsms_notify.__all__ names {name!r}, which griffe cannot find")
        target = member.final_target if member.is_alias else member
        lines.append(f"| [`{name}`][{target.path}] | {target.kind.value} | `{target.path}` |")
    return "\n".join(lines) + "\n"


# -- <!-- settings --> -----------------------------------------------------------------------
SETTINGS_FIELDS = ("name", "url_arg", "toml_key", "env", "default", "doc")


def settings_rows() -> list[Any]:
    """The rows of ``sslsms_notify.config.reference_rows()``, checked against the contract."""
    try:
        from sslsms_notify import config
    except Exception as exc:
        raise _fail("settings", f"sslsms_notify.config does not import: {type(exc).__name__}: {exc}") from exc
    reference_rows = getattr(config, "reference_rows", None)
    if not callable(reference_rows):
        raise _fail("settings", "sslsms_notify.config.reference_rows() does not exist")
    rows = list(reference_rows())
    if not rows:
        raise _fail("settings", "reference_rows() returned no rows")
    for row in rows:
        missing = [f for f in SETTINGS_FIELDS if not hasattr(row, f)]
        if missing:
            raise _fail(
                "settings",
                f"a reference row lacks {', '.join(missing)} "
                f"(the contract: {', '.join(SETTINGS_FIELDS)}): {row!r}",
            )
        if not str(row.doc).strip():
            raise _fail("settings", f"setting {row.name!r} has no description")
    return rows


def render_settings() -> str:
    rows = settings_rows()
    cells = [
        [
            f"<code>{html.escape(r.name)}</code>",
            f"<code>{html.escape(r.url_arg)}</code>" if r.url_arg else "",
            f"<code>{html.escape(r.toml_key)}</code>" if r.toml_key else "",
            f"<code>{html.escape(r.env)}</code>" if r.env else "",
            _code(str(r.default)),
            _code(r.doc),
        ]
        for r in rows
    ]
    headers = ["Setting", "URL argument", "TOML key", "Environment variable", "Default", "Meaning and rule"]
    return _table(headers, cells, ids=[f"setting-{r.name}" for r in rows])


# -- <!-- relay-settings --> -----------------------------------------------------------------
def _attribute_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of the ``Attributes:`` section of a Google-style docstring."""
    doc = inspect.getdoc(cls) or ""
    section = re.search(r"^Attributes:\n((?:[ \t]+.*\n?|\n)+)", doc, re.MULTILINE)
    if not section:
        return {}
    entries: dict[str, str] = {}
    current = None
    for line in section.group(1).splitlines():
        entry = re.match(r"^ {4}(\w+): (.*)$", line)
        if entry:
            current = entry.group(1)
            entries[current] = entry.group(2).strip()
        elif current and line.startswith(" " * 8):
            entries[current] += " " + line.strip()
    return entries


def _relay_env() -> dict[str, str]:
    """field -> the environment variable that sets it, found by trying each one on load()."""
    from sslsms_notify.relay.settings import RelaySettings

    names = sorted(set(re.findall(r"SSLSMS_RELAY_[A-Z_]+", inspect.getsource(RelaySettings.load))))
    default = RelaySettings()
    probes = ("127.0.0.1:1", "probe-token-0123456789")
    found: dict[str, str] = {}
    for name in names:
        for probe in probes:
            try:
                loaded = RelaySettings.load({}, environ={name: probe})
            except ValueError:
                continue
            changed = [
                f.name
                for f in dataclasses.fields(RelaySettings)
                if getattr(loaded, f.name) != getattr(default, f.name)
            ]
            if len(changed) == 1:
                found[changed[0]] = name
                break
        else:
            raise _fail("relay-settings", f"cannot tell which field {name} sets")
    return found


def _relay_default(value: Any) -> str:
    if value == ():
        return "(none: required)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'<code>"{html.escape(value)}"</code>'
    return f"<code>{value:g}</code>" if isinstance(value, float) else f"<code>{value}</code>"


def render_relay_settings() -> str:
    from sslsms_notify.relay.settings import RelaySettings

    docs = _attribute_docs(RelaySettings)
    env = _relay_env()
    rows, ids = [], []
    for f in dataclasses.fields(RelaySettings):
        if f.name not in docs:
            raise _fail(
                "relay-settings",
                f"RelaySettings.{f.name} has no description: "
                "add it to the class docstring's Attributes: section",
            )
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append(
            [
                f"<code>{f.name}</code>",
                f"<code>{env[f.name]}</code>" if f.name in env else "",
                _relay_default(default),
                _code(docs[f.name]),
            ]
        )
        ids.append(f"relay-{f.name}")
    unknown = set(docs) - {f.name for f in dataclasses.fields(RelaySettings)}
    if unknown:
        raise _fail("relay-settings", f"the docstring describes no such field: {', '.join(sorted(unknown))}")
    return _table(["<code>[relay]</code> key", "Environment variable", "Default", "Meaning"], rows, ids)


# -- <!-- dispatch-policy --> ----------------------------------------------------------------
def render_dispatch_policy() -> str:
    from sslsms_notify.alerting.dispatch import DispatchPolicy

    docs = _attribute_docs(DispatchPolicy)
    names = [f.name for f in dataclasses.fields(DispatchPolicy)]
    missing = [n for n in names if n not in docs]
    if missing:
        raise _fail(
            "dispatch-policy",
            f"DispatchPolicy.{', '.join(missing)}: "
            "no description in the class docstring's Attributes: section",
        )
    unknown = sorted(set(docs) - set(names))
    if unknown:
        raise _fail("dispatch-policy", f"the docstring describes no such field: {', '.join(unknown)}")
    default = DispatchPolicy()
    rows = [[f"<code>{n}</code>", _relay_default(getattr(default, n)), _code(docs[n])] for n in names]
    return _table(
        ["<code>DispatchPolicy</code> field", "Default", "Meaning"], rows, [f"dispatch-{n}" for n in names]
    )


# -- <!-- exit-codes --> ---------------------------------------------------------------------
def _commands() -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, click command) for every command of the CLI, groups first, in help order."""
    import click

    from sslsms_notify.cli import main

    def walk(group: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
        for name in group.list_commands(click.Context(group)):
            command = group.get_command(click.Context(group), name)
            if command is None or command.hidden:
                continue
            yield (*path, name), command
            if isinstance(command, click.Group):
                yield from walk(command, (*path, name))

    yield from walk(main, ())


def render_exit_codes() -> str:
    """Every :class:`~sslsms_notify.outcomes.ExitCode` with its meaning for ``send`` and the
    outcomes ``send`` reports with it; then the exit codes the other commands list in their
    help, from the same table their help is written from."""
    from sslsms_notify.cli.common import documented_exit_codes
    from sslsms_notify.outcomes import ExitCode, Outcome

    codes = sorted(ExitCode)
    if not codes:
        raise _fail("exit-codes", "sslsms_notify.outcomes.ExitCode has no members")
    unexplained = [code.name for code in codes if not code.meaning.strip()]
    if unexplained:
        raise _fail("exit-codes", f"ExitCode.{', '.join(unexplained)}: no meaning")
    rows = [
        [
            f"<code>{int(code)}</code>",
            f"<code>{code.name}</code>",
            _code(code.meaning),
            " ".join(f"<code>{o}</code>" for o in Outcome if o.reported and o.exit_code is code),
        ]
        for code in codes
    ]
    out = [
        _table(
            [
                "Exit code",
                "<code>ExitCode</code>",
                "Meaning for <code>send</code>",
                "<code>outcome</code> (<code>--json</code>)",
            ],
            rows,
            [f"exit-{int(c)}" for c in codes],
        )
    ]
    stated = [(path, documented_exit_codes(command)) for path, command in _commands() if path != ("send",)]
    stated = [(path, table) for path, table in stated if table]
    if stated:
        out.append("\nOther commands state their exit codes in their help:\n")
        for path, table in stated:
            text = ", ".join(f"`{int(code)}` {_code_md(meaning)}" for code, meaning in table.items())
            out.append(f"- `sslsms-notify {' '.join(path)}`: {text}")
        out.append("")
    return "\n".join(out)


def render_outcomes() -> str:
    """Every outcome ``send`` reports (``--json``'s ``outcome``), its exit code and its meaning."""
    from sslsms_notify.outcomes import Outcome

    # as a script reads them: success first, then by exit code, internal errors last
    reported = sorted(
        (o for o in Outcome if o.reported), key=lambda o: (o.exit_code != 0, o.exit_code == 1, o.exit_code)
    )
    unexplained = [o.name for o in reported if not o.meaning.strip()]
    if unexplained:
        raise _fail("outcomes", f"Outcome.{', '.join(unexplained)}: no meaning")
    rows = [[f"<code>{o}</code>", f"<code>{int(o.exit_code)}</code>", _code(o.meaning)] for o in reported]
    return _table(["<code>outcome</code>", "Exit code", "Meaning"], rows, [f"outcome-{o}" for o in reported])


def _code_md(text: str) -> str:
    """Text for a Markdown line: nothing that Markdown would take as markup."""
    return text.replace("*", r"\*").replace("_", r"\_").replace("<", "&lt;")


# -- <!-- cli-help COMMAND --> ---------------------------------------------------------------
def render_cli_help(path: tuple[str, ...]) -> str:
    from click.testing import CliRunner

    from sslsms_notify.cli import main

    known = {p for p, _ in _commands()}
    if path not in known:
        raise _fail(f"cli-help {' '.join(path)}", f"sslsms-notify has no command {' '.join(path)!r}")
    result = CliRunner().invoke(main, [*path, "--help"], prog_name="sslsms-notify", terminal_width=100)
    if result.exit_code != 0:
        raise _fail(f"cli-help {' '.join(path)}", f"--help exited {result.exit_code}: {result.output}")
    return f"\n```text\n$ sslsms-notify {' '.join(path)} --help\n{result.output.rstrip()}\n```\n"


def leaf_commands() -> list[tuple[str, ...]]:
    """Commands a user runs (groups' subcommands, not the groups themselves)."""
    import click

    return [p for p, c in _commands() if not isinstance(c, click.Group)]


# -- <!-- metrics --> ------------------------------------------------------------------------
def scrape_relay_metrics() -> str:
    """The exposition text of a real RelayMetrics after one alert, one SMS and one relay request."""
    from sslsms_notify import Notifier
    from sslsms_notify.relay.metrics import RelayMetrics

    notifier = Notifier(
        _emulated_client(), groups={"oncall": ["01712345678"]}, store="memory", close_at_exit=None
    )
    try:
        metrics = RelayMetrics(notifier)
        notifier.alert("docs build: one alert so every metric has a sample", source="docs")
        if not notifier.flush(10):
            raise _fail("metrics", "the emulator did not take the docs build's SMS within 10 s")
        metrics.request("/v1/alerts", 202, 0.001)
        metrics.received("api", 1)
        body, _content_type = metrics.render()
    finally:
        notifier.close(5)
    return body.decode()


@dataclasses.dataclass
class MetricDoc:
    name: str
    kind: str
    help: str
    labels: list[str]


def parse_exposition(text: str) -> list[MetricDoc]:
    """Metric families of a Prometheus text exposition, with their label names (``le`` aside)."""
    families: dict[str, MetricDoc] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            families.setdefault(name, MetricDoc(name, "", doc, []))
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            families.setdefault(name, MetricDoc(name, kind, "", [])).kind = kind
        elif line and not line.startswith("#"):
            sample = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s", line)
            if not sample:
                continue
            family = next(
                (
                    f
                    for n, f in families.items()
                    if sample.group(1) in (n, f"{n}_bucket", f"{n}_sum", f"{n}_count")
                ),
                None,
            )
            for label in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', sample.group(2) or ""):
                if family is not None and label != "le" and label not in family.labels:
                    family.labels.append(label)
    # prometheus-client adds a "<name>_created" timestamp gauge beside each labelled counter
    # and histogram of ours: an artefact of the library, not a metric of ours.
    return [
        f
        for n, f in families.items()
        if not (
            n.endswith("_created") and any(n == base.removesuffix("_total") + "_created" for base in families)
        )
    ]


def render_metrics() -> str:
    from sslsms_notify.relay.metrics import _COUNTERS, _GAUGES

    families = parse_exposition(scrape_relay_metrics())
    exported = {f.name for f in families}
    for table, suffix in ((_COUNTERS, "_total"), (_GAUGES, "")):
        for key, (name, _doc) in table.items():
            if name + suffix not in exported and name not in exported:
                raise _fail(
                    "metrics", f"{name} (stats key {key!r}) is declared but /metrics did not export it"
                )
    rows = [
        [
            f"<code>{f.name}</code>",
            f.kind,
            " ".join(f"<code>{label}</code>" for label in f.labels),
            _code(f.help),
        ]
        for f in families
    ]
    return _table(["Metric", "Type", "Labels", "Meaning"], rows, [f"metric-{f.name}" for f in families])


# -- <!-- stats --> --------------------------------------------------------------------------
#: keys Notifier.stats() adds to the Stats counters: the backlog, read at call time
STATS_BACKLOG = {
    "dropped_closed": "of ``dropped``: raised after the notifier was closed",
    "dropped_store_refused": "of ``dropped``: the queue was full because the store refused writes",
    "held": "alerts the store refused, held in memory and retried until it takes them",
    "queued": "alerts waiting for the intake thread",
    "pending": "SMS in the outbox still to send (in flight included)",
    "dead": "dead letters kept in the outbox",
    "windows": "open dedup windows",
}


def stats_docs() -> dict[str, str]:
    """Stats field -> its ``#:`` comment, in source order."""
    from sslsms_notify.alerting.stats import Stats

    docs: dict[str, str] = {}
    comment: list[str] = []
    for line in inspect.getsource(Stats).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            comment.append(stripped[2:].strip())
            continue
        field = re.match(r"^(\w+): ", stripped)
        if field and not field.group(1).startswith("_"):
            if not comment:
                raise _fail("stats", f"Stats.{field.group(1)} has no '#:' comment above it")
            docs[field.group(1)] = " ".join(comment)
        comment = []
    return docs


def render_stats() -> str:
    from sslsms_notify import Notifier

    docs = stats_docs()
    notifier = Notifier(_emulated_client(), recipients=["01712345678"], start=False, close_at_exit=None)
    try:
        keys = list(notifier.stats())
    finally:
        notifier.close(1)
    rows = []
    for key in keys:
        doc = docs.get(key) or STATS_BACKLOG.get(key)
        if doc is None:
            raise _fail(
                "stats", f"Notifier.stats() returns {key!r}, which neither Stats nor STATS_BACKLOG describes"
            )
        kind = "backlog" if key in STATS_BACKLOG else "counter"
        rows.append([f"<code>{key}</code>", kind, _code(doc)])
    return _table(["Key", "Kind", "Meaning"], rows, [f"stats-{k}" for k in keys])


# -- the hooks -------------------------------------------------------------------------------
RENDERERS: dict[str, Callable[[], str]] = {
    "settings": render_settings,
    "relay-settings": render_relay_settings,
    "exit-codes": render_exit_codes,
    "outcomes": render_outcomes,
    "metrics": render_metrics,
    "version": render_version,
    "stats": render_stats,
    "dispatch-policy": render_dispatch_policy,
    "public-names": render_public_names,
}


def render_marker(name: str, args: tuple[str, ...] = ()) -> str:
    """What a marker becomes (cached for the build: the metrics scrape sends an SMS)."""
    key = " ".join((name, *args))
    if key not in _cache:
        if name == "cli-help":
            if not args:
                raise _fail(name, "name the command, e.g. <!-- cli-help send -->")
            _cache[key] = render_cli_help(args)
        elif name in RENDERERS and not args:
            _cache[key] = RENDERERS[name]()
        else:
            raise PluginError(
                f"docs/hooks.py: unknown marker <!-- {key} --> "
                f"(known: {', '.join(sorted(RENDERERS))}, cli-help COMMAND)"
            )
    return _cache[key]


def replace_markers(markdown: str, where: str = "") -> str:
    """``markdown`` with every marker replaced by what it renders."""
    found = [(m.group(1), tuple(m.group(2).split())) for m in MARKER.finditer(markdown)]
    commands = {args for name, args in found if name == "cli-help"}
    if commands:
        missing = [" ".join(p) for p in leaf_commands() if p not in commands]
        if missing:
            raise PluginError(
                f"docs/hooks.py: {where or 'the CLI page'} describes no "
                + ", ".join(f"'sslsms-notify {m}'" for m in missing)
                + " (add a section with <!-- cli-help COMMAND -->)"
            )
    return MARKER.sub(lambda m: render_marker(m.group(1), tuple(m.group(2).split())), markdown)


def on_pre_build(config: Any, **kwargs: Any) -> None:
    _cache.clear()
    check_changelog()


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    return replace_markers(markdown, page.file.src_uri)
