"""Every shell and Python block of getting-started, the door pages (and the home and
emulator pages) runs as written.

For each page of :data:`PAGES`, the fenced ``bash``/``sh``/``console``/``python`` blocks
(``--8<--`` snippet includes resolved from the repository) run **in page order, in one
shell session per page**, as a reader pastes them into one terminal:

- a fresh temporary ``HOME`` (``XDG_CONFIG_HOME`` and ``XDG_STATE_HOME`` under it), a
  working directory holding ``.venv``, a link to the venv running these tests, whose
  ``bin`` is first on ``PATH`` (bare ``sslsms-notify``, ``python``, ``apprise`` are its
  own), and no ``SSLSMS_*`` variable from outside;
- one ``bash -e`` process reads the page's blocks one after the other, so ``export``,
  ``cd`` and background jobs carry over from one block to the next; a Python block runs
  as ``python BLOCK.py`` in that session (its environment, its directory);
- a real gateway emulator (:class:`EmulatorServer`) on loopback, that the blocks are
  pointed at by a short list of rewrites (:class:`Rewrite`, the same for every page);
  every SMS a block makes is counted there, per phone.

A page talks to the test through HTML comments right before a block, invisible on the
site. :data:`MARKERS` lists them:

- ``<!-- docs-test: skip: REASON -->``: the block is not run (it installs packages, runs
  a daemon in the foreground, needs a host we do not have). Every skip must be listed in
  :data:`SKIPPED`, so that a new unrunnable block is a visible decision;
- ``<!-- docs-test: exit N -->``: the page says this block exits ``N``;
- ``<!-- docs-test: write PATH -->``: a file block (TOML, INI, YAML, text) a later block
  reads, written to ``PATH`` (``~`` is the fresh HOME, a relative path is in the
  working directory, ``/etc/...`` and ``/var/...`` go under the test's directory);
- ``<!-- docs-test: pytest -->``: a Python block that is a pytest test, run by pytest.

What a block delivers is declared in :data:`SENDS` (phone -> SMS) and counted exactly at
the emulator: after each block the phones must have received what the blocks so far
declared, no more, no fewer. What the page says a block prints is in :data:`OUTPUTS`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorServer, GatewayEmulator
from sslsms_notify.emulator.core import EmulatorConfig

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
VENV_BIN = Path(sys.prefix) / "bin"

#: the pages, in the order a newcomer reads them
PAGES = [
    "getting-started.md",
    "index.md",
    "doors/logging.md",
    "doors/structlog.md",
    "doors/apprise.md",
    "doors/cli.md",
    "doors/relay.md",
    "emulator.md",
]
#: pages whose blocks take more than a few seconds (a demo, a pytest run, many commands)
SLOW = {"getting-started.md", "doors/apprise.md", "doors/cli.md", "emulator.md"}

# -- what the test changes in a block before running it (the same for every page: Rewrite)
#
# 1. An ``sslsms://`` URL without ``base_url=`` gets ``base_url=`` of the test's emulator.
# 2. A ``[gateway]`` table without ``base_url`` gets the test's emulator as its ``base_url``.
# 3. Port 8025 (an emulator a page starts itself) and 8026 (a relay a page starts) become
#    free ports, so that runs side by side never meet.
# 4. ``relay.internal`` (the relay's host in the examples) is 127.0.0.1.
# 5. Absolute paths under ``/etc/`` and ``/var/`` move under the page's temporary directory.
#
# The emulator accepts the placeholder credentials the pages show (ACCOUNTS), so
# tokens and SIDs are not rewritten.
#: token -> SIDs: the placeholders of the pages, which the test's emulator accepts
ACCOUNTS = {
    DEMO_API_TOKEN: {DEMO_SID},
    "YOUR_API_TOKEN": {"MYBRAND"},
    "TOKEN": {"MYBRAND", "SID"},
    "MY_API_TOKEN": {"MYBRAND"},
    "put-the-ssl-wireless-token-here": {"MYBRAND"},
}

MARKERS = ("skip: REASON", "exit N", "write PATH", "pytest")
SERVE = (
    "SSLSMS_RELAY_TOKENS=$(openssl rand -hex 24) sslsms-notify serve --config /etc/sslsms-notify/relay.toml"
)

#: (page, first line of the block, its comment left out) -> why it cannot run
SKIPPED: dict[tuple[str, str], str] = {
    ("getting-started.md", "python3 -m venv .venv"): "installs the package",
    ("index.md", "python3 -m venv .venv && . .venv/bin/activate && pip install ."): "installs the package",
    ("doors/logging.md", "from celery.signals import worker_process_shutdown"): "needs Celery",
    ("doors/cli.md", "sslsms-notify outbox list --store redis://redis:6379/0"): "needs a Redis server",
    ("doors/cli.md", "sslsms-notify outbox retry 0Pq7xYz1AbCdEfGhIjKl"): "an example csms_id",
    ("doors/cli.md", "sslsms-notify ack 4F2K9M"): "an example ack code (yours comes in the SMS)",
    ("doors/cli.md", "sslsms-notify emulator --port 8025"): "runs in the foreground until stopped",
    ("doors/cli.md", SERVE): "runs in the foreground until stopped",
    ("doors/relay.md", SERVE): "runs in the foreground until stopped",
}

#: (page, first line of the block, its comment left out) -> the SMS each phone gets from it
SENDS: dict[tuple[str, str], dict[str, int]] = {
    ("getting-started.md", "sslsms-notify emulator --port 8025 &"): {"01712345678": 1},
    ("getting-started.md", 'export SSLSMS_URL="sslsms://MYBRAND:YOUR_API_TOKEN@01712345678"'): {
        "01712345678": 1
    },
    ("getting-started.md", "import logging"): {"01712345678": 1},
    ("getting-started.md", "sslsms-notify config check"): {"01712345678": 1, "01812345678": 1},
    ("doors/logging.md", "import logging"): {"01912345678": 1},
    ("doors/logging.md", '--8<-- "examples/logging_dictconfig.py"'): {"01712345678": 3},
    ("doors/logging.md", "import logging.config"): {"01712345678": 1},
    ("doors/structlog.md", "import structlog"): {"01712345678": 1},
    ("doors/apprise.md", "sslsms-notify apprise install"): {"01712345678": 1, "01812345678": 1},
    ("doors/apprise.md", 'apprise -c apprise.yml -g oncall -b "db1 replication broken"'): {
        "01712345678": 1,
        "01812345678": 1,
    },
    ("doors/apprise.md", 'echo "oncall=sslsms://MYBRAND:TOKEN@01712345678" > apprise.txt'): {
        "01712345678": 1
    },
    ("doors/apprise.md", "import apprise"): {"01712345678": 1},
    ("doors/cli.md", 'sslsms-notify send --to oncall "db1: disk 95% full"'): {
        "01712345678": 5,
        "01812345678": 4,
    },
    ("doors/cli.md", 'sslsms-notify silence expire "$ID"'): {"01712345678": 1, "01812345678": 1},
    ("doors/relay.md", "curl -s -X POST http://127.0.0.1:8026/v1/alerts \\"): {
        "01712345678": 1,
        "01812345678": 1,
    },
    ("doors/relay.md", "export SSLSMS_RELAY_TOKEN=$TOKEN"): {"01712345678": 1, "01812345678": 1},
    ("emulator.md", "sslsms-notify emulator --port 8025 &"): {"01712345678": 1},
}

#: (page, first line of the block, its comment left out) -> what the page says it prints
OUTPUTS: dict[tuple[str, str], list[str]] = {
    ("getting-started.md", "sslsms-notify emulator --port 8025 &"): ["delivered: sms=1, delivered=1"],
    ("getting-started.md", 'sslsms-notify send --url "$EMULATOR_URL" "db1: disk 95% full"'): ["suppressed"],
    ("getting-started.md", "sslsms-notify config check"): ["shadowed: SSLSMS_URL (present, and ignored: "],
    ("doors/cli.md", 'sslsms-notify segments "db1: disk 95% full"'): [
        "GSM-7 (EN), 18 characters, 18 units, 1 SMS",
        "UCS-2 (BN), 12 characters, 12 units, 1 SMS",
    ],
    ("doors/cli.md", 'sslsms-notify send --to oncall --source backup "backup failed"'): ["silenced: "],
    ("doors/relay.md", "export TOKEN=$(openssl rand -hex 24)"): ['{"status": "ok"'],
    ("doors/relay.md", "curl -s -X POST http://127.0.0.1:8026/v1/alerts \\"): ['{"accepted": 1', '"queued"'],
}

RUN_LANGUAGES = {
    "bash": "shell",
    "sh": "shell",
    "shell": "shell",
    "console": "shell",
    "python": "python",
    "py": "python",
}
BLOCK_TIMEOUT = 120.0  # seconds one block may take on a busy machine
SMS_TIMEOUT = 30.0  # seconds the SMS a block declares may take to arrive after it ends


# -- reading a page ---------------------------------------------------------------------
@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    language: str
    first_line: str  # as written, its comment left out (a snippet include stays an include)
    text: str  # snippets resolved, dedented
    markers: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str | None:
        return RUN_LANGUAGES.get(self.language)

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    def marker(self, name: str) -> str | None:
        for marker in self.markers:
            head, _, rest = marker.partition(" ")
            if head.rstrip(":") == name:
                return rest.strip()
        return None


FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\n]*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
COMMENT = re.compile(r"\s+#\s.*$")  # a line's trailing comment
SNIPPET = re.compile(r"""^\s*--8<--\s+["'](?P<path>[^"']+)["']\s*$""")


def read_blocks(page: str) -> list[Block]:
    """The page's fenced blocks in order, each with the docs-test markers right before it."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        if marker:
            body = marker.group("body")
            head = body.split(":", 1)[0].split(" ", 1)[0]
            assert head in {m.split(" ")[0].rstrip(":") for m in MARKERS}, (
                f"docs/{page}:{i + 1}: unknown docs-test marker {body!r} (known: {', '.join(MARKERS)})"
            )
            pending.append(body)
            i += 1
            continue
        fence = FENCE.match(line)
        if not fence:
            assert not pending or not line.strip(), (
                f"docs/{page}:{i + 1}: a docs-test marker must come right before a fenced block"
            )
            i += 1
            continue
        indent, mark = fence.group("indent"), fence.group("fence")
        language = (fence.group("info").split() or [""])[0].lstrip("{.").lower()
        body_lines: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^[ \t]*{re.escape(mark)}\s*$", lines[i]):
            body_lines.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        assert i < len(lines), f"docs/{page}:{i - len(body_lines)}: a fenced block never closes"
        first = COMMENT.sub("", next((b.strip() for b in body_lines if b.strip()), ""))
        text = "\n".join(_resolve_snippets(body_lines, page)) + "\n"
        blocks.append(Block(page, i - len(body_lines), language, first, text, pending))
        pending = []
        i += 1
    assert not pending, f"docs/{page}: a docs-test marker at the end of the page has no block"
    return blocks


def _resolve_snippets(body: list[str], page: str) -> Iterator[str]:
    for line in body:
        snippet = SNIPPET.match(line)
        if snippet is None:
            yield line
            continue
        path = ROOT / snippet.group("path")
        assert path.is_file(), f"docs/{page}: the snippet {snippet.group('path')} does not exist"
        yield from path.read_text(encoding="utf-8").splitlines()


def console_commands(text: str) -> str:
    """A ``console`` block's commands: the lines after a ``$ `` prompt (output is dropped)."""
    return "".join(line[2:] + "\n" for line in text.splitlines() if line.startswith("$ "))


# -- the rewrites -----------------------------------------------------------------------
@dataclass
class Rewrite:
    gateway_url: str
    ports: dict[str, str]
    root: Path

    def __call__(self, text: str) -> str:
        text = re.sub(r"sslsms://[^\s\"'`<>)]+", self._url, text)
        text = re.sub(
            r"^(\[gateway\][^\n]*\n)(?![\s\S]*?^\s*base_url\s*=)",
            lambda m: m.group(1) + f'base_url = "{self.gateway_url}"\n',
            text,
            flags=re.MULTILINE,
        )
        for old, new in self.ports.items():
            text = re.sub(rf"(?<!\d){old}(?!\d)", new, text)
        text = text.replace("relay.internal", "127.0.0.1")
        return re.sub(
            r"""(^|[\s"'=(]|sqlite:///)/(etc|var)/""", rf"\g<1>{self.root}/\g<2>/", text, flags=re.M
        )

    def _url(self, match: re.Match[str]) -> str:
        url = match.group(0)
        if "base_url=" in url:
            return url
        return f"{url}{'&' if '?' in url else '?'}base_url={self.gateway_url}"

    def path(self, written: str, home: Path, cwd: Path) -> Path:
        rewritten = self(written)
        if rewritten.startswith("~/"):
            return home / rewritten[2:]
        path = Path(rewritten)
        if not path.is_absolute():
            return cwd / path
        assert path.is_relative_to(self.root), f"write {written}: only ~, relative, /etc and /var paths"
        return path


# -- the shell session --------------------------------------------------------------------
class Session:
    """One ``bash -e`` reading the page's blocks in order from a pipe, as one terminal."""

    def __init__(self, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.scratch = scratch
        self.count = 0
        self.log = (scratch / "session.log").open("wb")
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-e"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            cwd=cwd,
            env=env,
            process_group=0,  # background jobs stay in it: closing kills them all
        )

    def run(self, script: str, expect_exit: int) -> tuple[int, str]:
        """Run ``script`` in the session; its exit code and output (stdout and stderr)."""
        self.count += 1
        n = self.count
        file, out, rc = (self.scratch / f"block{n}.{ext}" for ext in ("sh", "out", "rc"))
        file.write_text(script, encoding="utf-8")
        f, o, r = (shlex.quote(str(path)) for path in (file, out, rc))
        if expect_exit == 0:  # in the shell itself: exports, cd and jobs carry over
            command = f"source {f} </dev/null >{o} 2>&1\n"
        else:  # in a subshell, whose exit code the session survives
            command = f"set +e\n( set -e; source {f} ) </dev/null >{o} 2>&1\n"
        command += f"echo $? >{r}.tmp\nset -e\nmv {r}.tmp {r}\n"
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while not rc.exists():
            if self.proc.poll() is not None:
                return self.proc.returncode, _read(out)
            if time.monotonic() > deadline:
                return -1, _read(out) + f"\n[still running after {BLOCK_TIMEOUT:.0f} s]"
            time.sleep(0.02)
        return int(rc.read_text().strip() or -1), _read(out)

    def close(self) -> None:
        """End the shell and every process a block started (``... &``): their whole group."""
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                self.proc.poll()  # reap the shell
                time.sleep(0.05)
            if not _group_alive(self.proc.pid):
                break
        self.proc.wait(10)
        self.log.close()


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies, which wait to be reaped, do not)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rpartition(")")[2].split()[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


# -- counting SMS at the emulators --------------------------------------------------------
def _wire(number: str) -> str:
    return "88" + number if number.startswith("01") else number


def received(gateway: GatewayEmulator, page_emulator_port: str) -> Counter[str]:
    """SMS per phone: the test's emulator, and an emulator the page started on port 8025."""
    counts = Counter(m.msisdn for m in gateway.messages())
    try:
        url = f"http://127.0.0.1:{page_emulator_port}/__emulator/messages"
        with urllib.request.urlopen(url, timeout=5) as answer:
            counts.update(m["msisdn"] for m in json.load(answer)["messages"])
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        pass  # the page started none, or it has stopped (or the port is not an emulator's)
    return counts


def wait_for_sms(gateway: GatewayEmulator, port: str, expected: Counter[str]) -> Counter[str]:
    """What the phones received, once every declared SMS is in (or the deadline passed)."""
    deadline = time.monotonic() + SMS_TIMEOUT
    while True:
        got = received(gateway, port)
        if all(got[phone] >= n for phone, n in expected.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


# -- the test -----------------------------------------------------------------------------
def _env(home: Path, tmp: Path) -> dict[str, str]:
    """A fresh environment: nothing inherited but the locale and the system's PATH."""
    system_path = [
        p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if Path(p) != VENV_BIN
    ]
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "PATH": os.pathsep.join([str(VENV_BIN), *system_path]),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(tmp),
        "TERM": "dumb",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _script(block: Block, rewrite: Rewrite, scratch: Path, n: int) -> str:
    """The shell commands that run the block (a Python block: its file, rewritten)."""
    if block.kind == "shell":
        return rewrite(console_commands(block.text) if block.language == "console" else block.text)
    pytest_block = block.marker("pytest") is not None
    file = scratch / (f"test_block{n}.py" if pytest_block else f"block{n}.py")
    file.write_text(rewrite(block.text), encoding="utf-8")
    if pytest_block:
        return f"python -m pytest -q -p no:cacheprovider {shlex.quote(str(file))}\n"
    return f"python {shlex.quote(str(file))}\n"


def test_every_page_is_tested_and_every_marker_listed() -> None:
    """The skips in the pages are the ones listed here, and SENDS names real blocks."""
    for page in PAGES:
        assert (DOCS / page).is_file(), page
    marked = {
        (block.page, block.first_line): block.marker("skip")
        for page in PAGES
        for block in read_blocks(page)
        if block.marker("skip") is not None
    }
    unlisted = {key: reason for key, reason in marked.items() if SKIPPED.get(key) != reason}
    gone = {key: reason for key, reason in SKIPPED.items() if marked.get(key) != reason}
    assert not unlisted and not gone, (
        f"skips in the pages, not in SKIPPED (list each with its reason): {unlisted}; "
        f"in SKIPPED, not in the pages: {gone}"
    )
    blocks = Counter((block.page, block.first_line) for page in PAGES for block in read_blocks(page))
    for key in [*SENDS, *SKIPPED, *OUTPUTS]:
        assert blocks[key] == 1, f"{key}: names {blocks[key]} blocks, not one (SENDS, SKIPPED, OUTPUTS)"
    for page in PAGES:
        for block in read_blocks(page):
            for name in ("skip", "exit", "pytest"):
                if block.marker(name) is not None:
                    assert block.kind, (
                        f"{block.where}: {name!r} on a {block.language or 'plain'} block, which never runs"
                    )
            if block.marker("write") is not None:
                assert not block.kind, f"{block.where}: 'write' on a {block.language} block, which runs"
            if block.marker("pytest") is not None:
                assert block.kind == "python", f"{block.where}: 'pytest' on a {block.language} block"


@pytest.mark.parametrize(
    "page", [pytest.param(p, marks=[pytest.mark.slow] if p in SLOW else []) for p in PAGES]
)
def test_page_blocks_run_as_written(page: str, tmp_path: Path) -> None:
    home, work, tmp, scratch = (tmp_path / d for d in ("home", "work", "tmp", ".blocks"))
    for directory in (home, work, tmp, scratch):
        directory.mkdir()
    (work / ".venv").symlink_to(sys.prefix)
    ports = {"8025": str(free_port()), "8026": str(free_port())}
    gateway = GatewayEmulator(EmulatorConfig(accounts={k: set(v) for k, v in ACCOUNTS.items()}))
    with EmulatorServer(gateway) as server:
        rewrite = Rewrite(server.url, ports, tmp_path)
        session = Session(work, _env(home, tmp), scratch)
        expected: Counter[str] = Counter()
        ran = 0
        try:
            for block in read_blocks(page):
                written = block.marker("write")
                if written is not None:
                    target = rewrite.path(written, home, work)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(rewrite(block.text), encoding="utf-8")
                    continue
                if block.kind is None or block.marker("skip") is not None:
                    continue
                expect_exit = int(block.marker("exit") or 0)
                script = _script(block, rewrite, scratch, session.count + 1)
                code, output = session.run(script, expect_exit)
                ran += 1
                assert code == expect_exit, (
                    f"{block.where}: exit {code}, the page says {expect_exit}\n"
                    f"--- the block as run ---\n{script}--- its output ---\n{output}"
                )
                for phone, n in SENDS.get((page, block.first_line), {}).items():
                    expected[_wire(phone)] += n
                for said in OUTPUTS.get((page, block.first_line), []):
                    assert said in output, (
                        f"{block.where}: the page says it prints {said!r}; it printed:\n{output}"
                    )
                got = wait_for_sms(gateway, ports["8025"], expected)
                assert got == expected, (
                    f"{block.where}: after this block the phones got {dict(got)}, "
                    f"the blocks so far declare {dict(expected)} (SENDS)\n--- its output ---\n{output}"
                )
        finally:
            session.close()
    assert ran, f"docs/{page} has no block to run"
