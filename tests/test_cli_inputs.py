"""Every input gets a clear answer: the installed ``sslsms-notify`` over bad and edge inputs.

Each row runs the real console script as a subprocess (against the emulator served on
loopback, with its own HOME and state) and asserts the exit code, ONE line that says
what is wrong (field, value, rule), no traceback, and no credential in the output.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sslsms_notify.config import account_id
from sslsms_notify.stores.base import OutboxItem, OutboxState
from sslsms_notify.stores.redis import default_spool_path
from sslsms_notify.stores.sqlite import SQLiteStore

from .conftest import RedisProcess, free_port

CLI = str(Path(sys.executable).parent / "sslsms-notify")
TOKEN = "emulator-token-0123456789"
SECRET = "S3cretRedisPassw0rd"


@dataclass
class Ctx:
    """What a row may refer to: the gateway, a private directory, a closed port."""

    gateway: Any
    tmp: Path
    closed_port: int
    keep: list[Any] = field(default_factory=list)

    def expand(self, text: str) -> str:
        return (
            text.replace("{URL}", self.url())
            .replace("{BARE}", self.url(numbers=""))
            .replace("{PLAIN}", f"sslsms://EMULATOR:{TOKEN}@01711111111")
            # two gateway accounts and no store: each gets the CLI's default state file
            .replace("{ACCOUNT_A}", f"sslsms://STAGING:{TOKEN}@01711111111?base_url={{DOWN}}")
            .replace("{ACCOUNT_B}", f"sslsms://EMULATOR:{TOKEN}@01811111111?base_url={{GW}}")
            .replace("{WRONG}", self.url().replace(TOKEN, "wrong-token-1234"))
            .replace("{GW}", self.gateway.url)
            .replace("{DOWN}", f"http://127.0.0.1:{self.closed_port}")
            .replace("{TMP}", str(self.tmp))
            .replace("{CLOSED}", str(self.closed_port))
        )

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state" / "sslsms-notify"

    def url(self, numbers: str = "01711111111", base: str | None = None) -> str:
        return (
            f"sslsms://EMULATOR:{TOKEN}@{numbers}?base_url={base or self.gateway.url}"
            f"&store=sqlite:///{self.tmp}/cli.db"
        )


@dataclass
class Case:
    id: str
    args: tuple[str | bytes, ...]
    code: int
    #: what the one line must say
    says: str
    stdin: bytes | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: files written into the test's directory first (name -> content)
    files: dict[str, bytes | str] = field(default_factory=dict)
    setup: Callable[[Ctx], None] | None = None
    #: lines expected on the stream that carries the answer (None: not counted)
    lines: int | None = 1
    #: more assertions on (ctx, result)
    check: Callable[[Ctx, subprocess.CompletedProcess[bytes]], None] | None = None
    #: seconds the command may take at most
    within: float = 20.0
    #: a failure prints nothing on stdout (config check prints the configuration first)
    quiet_stdout: bool = True


# -- setups and checks ------------------------------------------------------------------
def leftover_in_flight(ctx: Ctx) -> None:
    """An interrupted `send` left an SMS to another phone in flight (its lease runs on)."""
    store = SQLiteStore(ctx.tmp / "cli.db")
    now = time.time()
    store.outbox_add([OutboxItem("leftover0000000000001", "8801811111111", "left behind", now, now)])
    assert len(store.outbox_claim(10, 120)) == 1
    store.close()


def only_this_sms(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    report = json.loads(result.stdout)
    assert report["outcome"] == "delivered" and report["sms"] == 1 and report["delivered"] == 1, report
    assert [m.msisdn for m in ctx.gateway.emulator.messages()] == ["8801711111111"]


def first_send(*args: str) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        env = {**_env(ctx), "SSLSMS_URL": ctx.expand("{URL}")}
        done = subprocess.run([CLI, "send", *args], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr

    return setup


def block_number(ctx: Ctx) -> None:
    ctx.gateway.emulator.config.blocked_msisdns.add("8801711111111")


def port_in_use(ctx: Ctx) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", ctx.closed_port))
    sock.listen()
    ctx.keep.append(sock)


def foreign_database(ctx: Ctx) -> None:
    """A state file some other program wrote: a SQLite file with tables of another shape."""
    db = sqlite3.connect(ctx.tmp / "foreign.db")
    db.executescript("CREATE TABLE outbox (x); PRAGMA user_version = 99;")
    db.close()


def cleaned_text_sent(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    (message,) = ctx.gateway.emulator.messages()
    assert message.text.endswith(": db1 down") and "\x1b" not in message.text


def nothing_sent(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    assert ctx.gateway.emulator.messages() == []


def no_secret(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    assert SECRET.encode() not in result.stdout + result.stderr
    assert b"hunter2" not in result.stdout + result.stderr


def pending_in(path: Path, *ids: str, due: float = 0.0) -> None:
    """SMS waiting in a state file, due ``due`` seconds from now (ids: 20 letters or digits)."""
    store = SQLiteStore(path)
    now = time.time()
    store.outbox_add([OutboxItem(i, "8801811111111", f"left behind {i}", now, now + due) for i in ids])
    store.close()


def pending_and_in_flight(ctx: Ctx) -> None:
    leftover_in_flight(ctx)
    pending_in(ctx.tmp / "cli.db", "waiting0000000000001", due=600)


def a_dead_letter(ctx: Ctx) -> None:
    store = SQLiteStore(ctx.tmp / "cli.db")
    now = time.time()
    item = OutboxItem("deadletter0000000001", "8801811111111", "given up", now, now, 1, OutboxState.DEAD)
    store.outbox_add([item.evolve(last_error="[4026] Blocked MSISDN")])
    store.close()


def still_pending(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    store = SQLiteStore(ctx.tmp / "cli.db")
    try:
        assert store.outbox_counts().pending == 1
    finally:
        store.close()


def account_a_left_an_sms(ctx: Ctx) -> None:
    """Account A (STAGING, its gateway down) leaves an SMS in its own default state file."""
    done = subprocess.run(
        [CLI, "send", "--timeout", "1", "--url", ctx.expand("{ACCOUNT_A}"), "through staging only"],
        env=_env(ctx),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 6, done.stderr


def old_shared_state_file(ctx: Ctx) -> None:
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    SQLiteStore(ctx.state_dir / "state.db").close()


def account_a_and_old_state(ctx: Ctx) -> None:
    account_a_left_an_sms(ctx)
    old_shared_state_file(ctx)


def accounts_kept_apart(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    """B delivered its own SMS only; A's waits in A's file; two files, no shared state.db."""
    report = json.loads(result.stdout)
    assert report["outcome"] == "delivered" and report["sms"] == 1, report
    assert [m.msisdn for m in ctx.gateway.emulator.messages()] == ["8801811111111"]
    file_a = ctx.state_dir / f"state-{account_id('STAGING', ctx.expand('{DOWN}'))}.db"
    file_b = ctx.state_dir / f"state-{account_id('EMULATOR', ctx.gateway.url)}.db"
    assert sorted(ctx.state_dir.glob("state*.db")) == sorted([file_a, file_b])
    store = SQLiteStore(file_a)
    try:
        (left,) = store.outbox_list(None)
        assert left.text.endswith("through staging only") and left.msisdn == "8801711111111"
    finally:
        store.close()


def names_the_state_files(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    err = result.stderr.decode()
    account_a = account_id("STAGING", ctx.expand("{DOWN}"))
    assert f"sqlite:///{ctx.state_dir}/state-{account_a}.db" in err, err
    assert f"sqlite:///{ctx.state_dir}/state.db (the old file every account shared)" in err, err
    assert ctx.gateway.emulator.messages() == []


def mentions_the_old_state_file(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    err = result.stderr.decode()
    assert f"note: {ctx.state_dir}/state.db is the state file every account shared" in err, err
    assert (ctx.state_dir / "state.db").exists()  # kept, never deleted


def auth_warning_line(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith("suppressed: "), lines
    assert lines[1].startswith(
        "warning: the gateway refused the credentials for other SMS in this run ([4001]"
    ), lines


def auth_warning_field(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    report = json.loads(result.stdout)
    assert report["outcome"] == "suppressed", report
    assert report["warning"].startswith("the gateway refused the credentials for other SMS in this run")
    assert result.stderr == b""  # no library log line either


def repeat_while_credentials_refused(ctx: Ctx) -> None:
    """A dedup window for the alert, and an SMS an earlier run left, due now."""
    first_send("disk 95% full")(ctx)
    pending_in(ctx.tmp / "cli.db", "leftover000000000002")


def quota_used_up(ctx: Ctx) -> None:
    ctx.gateway.emulator.config.daily_quota = 0


def redis_not_installed(ctx: Ctx) -> None:
    """A `redis` module that fails to import, first on PYTHONPATH: as without the extra."""
    (ctx.tmp / "shadow").mkdir()
    (ctx.tmp / "shadow" / "redis.py").write_text('raise ImportError("No module named redis")\n')


def severity_tag(tag: str) -> Callable[[Ctx, subprocess.CompletedProcess[bytes]], None]:
    def check(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
        (message,) = ctx.gateway.emulator.messages()
        assert message.text.startswith(f"[{tag}] "), message.text

    return check


def only_the_gateway_limit(ctx: Ctx, result: subprocess.CompletedProcess[bytes]) -> None:
    assert "over 15 SMS" not in result.stdout.decode()


TOML_URL = 'url = "sslsms://EMULATOR:emulator-token-0123456789@01711111111?base_url={GW}&store=sqlite:///{TMP}/cli.db"\n'
GROUPS = '[groups]\noncall = ["01811111111", "01911111111"]\ndbas = ["01511111111"]\n'

CASES: list[Case] = [
    # -- send reports the SMS it created, and only those --------------------------------
    Case(
        "leftover-in-flight-is-not-this-run",
        ("send", "--json", "--url", "{URL}", "only mine"),
        0,
        '"outcome": "delivered"',
        setup=leftover_in_flight,
        check=only_this_sms,
        within=10,
    ),
    Case("delivered", ("send", "--url", "{URL}", "db1 down"), 0, "delivered: sms=1, delivered=1"),
    Case(
        "ansi-escapes-cleaned",
        ("send", "--url", "{URL}", "\x1b[31mdb1 down\x1b[0m"),
        0,
        "delivered",
        check=cleaned_text_sent,
    ),
    Case(
        "every-sms-a-dead-letter",
        ("send", "--url", "{URL}", "to a blocked phone"),
        2,
        "rejected: [4026] Blocked MSISDN",
        setup=block_number,
    ),
    Case(
        "repeat-suppressed",
        ("send", "--url", "{URL}", "disk 96% full"),
        3,
        "suppressed: a repeat inside the dedup window",
        setup=first_send("disk 95% full"),
    ),
    Case(
        "held-by-cap",
        ("send", "--url", "{URL}&cap=1", "another alert"),
        4,
        "throttled: held by the per-phone cap",
        setup=first_send("first alert"),
    ),
    Case(
        "gateway-unreachable",
        (
            "send",
            "--timeout",
            "1",
            "--url",
            "sslsms://EMULATOR:emulator-token-0123456789@01711111111"
            "?base_url={DOWN}&store=sqlite:///{TMP}/cli.db",
            "while down",
        ),
        6,
        "unreachable: ",
        within=10,
    ),
    Case(
        "credentials-refused",
        (
            "send",
            "--url",
            "sslsms://EMULATOR:wrong-token-1234@01711111111?base_url={GW}&store=sqlite:///{TMP}/cli.db",
            "x",
        ),
        5,
        "auth_failed: [4001] Unauthorized",
        within=10,  # one line: no library log line before it
    ),
    # -- 1. one default state file per gateway account ------------------------------------
    Case(
        "two-accounts-never-share-an-outbox",
        ("send", "--json", "--url", "{ACCOUNT_B}", "through the emulator"),
        0,
        '"outcome": "delivered"',
        setup=account_a_left_an_sms,
        check=accounts_kept_apart,
        within=10,
    ),
    Case(
        "outbox-list-finds-the-account-file",
        ("outbox", "list", "--url", "{ACCOUNT_A}"),
        0,
        "1 waiting (0 in flight), 0 dead",
        setup=account_a_left_an_sms,
        lines=2,
    ),
    Case(
        "outbox-list-other-account-is-empty",
        ("outbox", "list", "--url", "{ACCOUNT_B}"),
        0,
        "0 waiting (0 in flight), 0 dead",
        setup=account_a_left_an_sms,
    ),
    Case(
        "outbox-list-without-configuration-names-the-state-files",
        ("outbox", "list"),
        2,
        "no configuration: the CLI keeps one state file per gateway account",
        setup=account_a_and_old_state,
        check=names_the_state_files,
    ),
    Case(
        "outbox-purge-without-configuration-or-state",
        ("outbox", "purge", "--yes"),
        2,
        "or pass --store (no state files exist yet)",
    ),
    Case(
        "outbox-list-mentions-the-old-state-file",
        ("outbox", "list", "--url", "{ACCOUNT_B}"),
        0,
        "0 waiting (0 in flight), 0 dead",
        setup=old_shared_state_file,
        check=mentions_the_old_state_file,
    ),
    Case(
        "check-shows-the-account-file",
        ("config", "check", "--config", "{TMP}/c.toml"),
        0,
        "  store: sqlite:///{TMP}/state/sslsms-notify/state-",
        files={"c.toml": 'url = "sslsms://EMULATOR:emulator-token-0123456789@01711111111?base_url={GW}"\n'},
        lines=None,
    ),
    # -- 5. a used-up quota is not "unreachable" -----------------------------------------
    Case(
        "daily-quota-used-up",
        ("send", "--timeout", "2", "--url", "{URL}", "over quota"),
        6,
        "rate_limited: the gateway's request quota is used up (4029) (waiting in the outbox",
        setup=quota_used_up,
        check=still_pending,
        within=10,
    ),
    Case(
        "unreachable-with-a-memory-store-says-lost",
        ("send", "--timeout", "1", "--store", "memory", "--url", "{ACCOUNT_A}", "x"),
        6,
        "(lost: a memory store keeps nothing between runs)",
        within=10,
    ),
    # -- 7. a wrong token is not hidden behind exit 3 or 4 --------------------------------
    Case(
        "suppressed-but-credentials-refused-warns",
        ("send", "--url", "{WRONG}", "disk 96% full"),
        3,
        "suppressed: a repeat inside the dedup window",
        setup=repeat_while_credentials_refused,
        lines=2,
        check=auth_warning_line,
        within=10,
    ),
    Case(
        "suppressed-but-credentials-refused-warns-json",
        ("send", "--json", "--url", "{WRONG}", "disk 96% full"),
        3,
        '"warning": "the gateway refused the credentials for other SMS in this run ([4001] Unauthorized)',
        setup=repeat_while_credentials_refused,
        check=auth_warning_field,
        within=10,
    ),
    # -- "delivered" for nothing ----------------------------------------------------------
    Case(
        "to-file-only-comments",
        ("send", "--url", "{BARE}", "--to-file", "{TMP}/numbers.txt", "x"),
        2,
        "holds no numbers (only blank lines and # comments)",
        files={"numbers.txt": "# on-call list\n"},
        check=nothing_sent,
    ),
    Case(
        "no-recipients",
        ("send", "--url", "{BARE}", "x"),
        2,
        "no recipients: pass --to NUMBER|GROUP",
    ),
    Case(
        "stdin-not-utf8",
        ("send", "--url", "{URL}"),
        2,
        "standard input is not valid UTF-8 (byte 0xff at offset 4)",
        stdin=b"disk\xff full",
        check=nothing_sent,
    ),
    Case("stdin-empty", ("send", "--url", "{URL}"), 2, "standard input is empty", stdin=b" \n\n"),
    Case("text-empty", ("send", "--url", "{URL}", ""), 2, "TEXT is empty"),
    Case("text-blank", ("send", "--url", "{URL}", "  \t "), 2, "TEXT is empty"),
    Case(
        "text-not-utf8",
        ("send", "--url", "{URL}", b"disk\xff"),
        2,
        "TEXT is not valid UTF-8 (byte 0xff at offset 4)",
    ),
    Case(
        "text-only-control-characters",
        ("send", "--url", "{URL}", "\x1b[31m\x01\x7f\x1b[0m"),
        2,
        "TEXT has nothing to send once control characters are removed",
        check=nothing_sent,
    ),
    # -- validated where it enters: URL arguments ---------------------------------------
    Case(
        "cap-period-zero",
        ("send", "--url", "{URL}&cap_period=0", "x"),
        2,
        "cap_period='0': must be a number of seconds greater than 0 and at most 2592000 (30 days)",
    ),
    Case("tps-nan", ("send", "--url", "{URL}&tps=nan", "x"), 2, "tps='nan': must be a number greater than 0"),
    Case("tps-huge", ("send", "--url", "{URL}&tps=1e400", "x"), 2, "tps='1e400': must be a number"),
    Case(
        "cap-negative", ("send", "--url", "{URL}&cap=-1", "x"), 2, "cap='-1': must be a whole number from 0"
    ),
    Case("cap-fraction", ("send", "--url", "{URL}&cap=1.5", "x"), 2, "cap='1.5': must be a whole number"),
    Case(
        "segments-16",
        ("send", "--url", "{URL}&segments=16", "x"),
        2,
        "segments='16': must be a whole number from 1 to 15",
    ),
    Case(
        "repeat-zero",
        ("send", "--url", "{URL}&repeat=0", "x"),
        2,
        "repeat='0': must be a number of seconds greater than 0",
    ),
    Case("dedup-empty", ("send", "--url", "{URL}&dedup=", "x"), 2, "dedup='': must be a number of seconds"),
    Case("group-wait-over-a-day", ("send", "--url", "{URL}&group_wait=86401", "x"), 2, "group_wait='86401'"),
    Case(
        "queue-size-zero",
        ("send", "--url", "{URL}&queue_size=0", "x"),
        2,
        "queue_size='0': must be a whole number from 1",
    ),
    Case(
        "base-url-ftp",
        ("send", "--url", "{PLAIN}?base_url=ftp://x", "x"),
        2,
        "base_url='ftp://x': must be an http:// or https:// URL",
    ),
    Case(
        "store-unknown-scheme",
        ("send", "--url", "{PLAIN}?store=foo://bar", "x"),
        2,
        "store='foo://bar': must be memory, sqlite:///PATH",
    ),
    Case(
        "url-arg-unknown",
        ("send", "--url", "{URL}&dedupe=5", "x"),
        2,
        "URL argument 'dedupe' is unknown (known: ",
    ),
    Case(
        "url-arg-twice", ("send", "--url", "{URL}&tps=1&tps=2", "x"), 2, "URL argument 'tps' is given twice"
    ),
    Case(
        "url-without-token",
        ("send", "--url", "sslsms://EMULATOR@01711111111", "x"),
        2,
        "the API token is missing",
    ),
    Case(
        "url-wrong-scheme",
        ("send", "--url", "https://EMULATOR:tok@01711111111", "x"),
        2,
        "URL must start with sslsms://",
    ),
    Case(
        "url-bad-recipient",
        ("send", "--url", "sslsms://S:tok-1234@012", "x"),
        2,
        "URL recipient '012' is not a valid number",
    ),
    Case("url-with-spaces", ("send", "--url", "{URL} ", "x"), 0, "delivered"),
    Case("url-empty", ("send", "--url", "", "x"), 2, "URL must start with sslsms://"),
    Case(
        "env-url-invalid",
        ("send", "x"),
        2,
        "SSLSMS_URL: tps='fast': must be a number",
        env={"SSLSMS_URL": "sslsms://S:tok-1234@01711111111?tps=fast"},
    ),
    Case(
        "no-configuration", ("send", "--to", "01711111111", "x"), 2, "no configuration: pass an sslsms:// URL"
    ),
    # -- options ------------------------------------------------------------------------
    Case(
        "timeout-zero",
        ("send", "--url", "{URL}", "--timeout", "0", "x"),
        2,
        "--timeout='0': must be a number of seconds greater than 0 and at most 3600",
    ),
    Case("timeout-nan", ("send", "--url", "{URL}", "--timeout", "nan", "x"), 2, "--timeout='nan'"),
    Case("timeout-inf", ("send", "--url", "{URL}", "--timeout", "inf", "x"), 2, "--timeout='inf'"),
    Case("timeout-word", ("send", "--url", "{URL}", "--timeout", "soon", "x"), 2, "--timeout='soon'"),
    Case(
        "severity-unknown", ("send", "--url", "{URL}", "--severity", "loud", "x"), 2, "'loud' is not one of"
    ),
    # -- 13. the relay API's severity aliases, any case ------------------------------------
    Case(
        "severity-alias-warn",
        ("send", "--url", "{URL}", "--severity", "WARN", "x"),
        0,
        "delivered: sms=1",
        check=severity_tag("WARN"),
    ),
    Case(
        "severity-alias-fatal",
        ("send", "--url", "{URL}", "--severity", "Fatal", "x"),
        0,
        "delivered: sms=1",
        check=severity_tag("CRIT"),
    ),
    Case(
        "severity-alias-err",
        ("send", "--url", "{URL}", "--severity", "err", "x"),
        0,
        "delivered: sms=1",
        check=severity_tag("ERROR"),
    ),
    # -- 6. --url with --config: refused, never one silently ignored ------------------------
    Case(
        "url-and-config",
        ("send", "--url", "{URL}", "--config", "/etc/shadow", "x"),
        2,
        "rejected: --url and --config cannot be used together",
        check=nothing_sent,
    ),
    Case(
        "check-url-and-config",
        ("config", "check", "--url", "{URL}", "--config", "{TMP}/c.toml"),
        2,
        "--url and --config cannot be used together",
        files={"c.toml": TOML_URL},
    ),
    Case(
        "outbox-url-and-config",
        ("outbox", "list", "--url", "{URL}", "--config", "{TMP}/c.toml"),
        2,
        "--url and --config cannot be used together",
        files={"c.toml": TOML_URL},
    ),
    # -- 12. exit 5 is the relay's refusal too --------------------------------------------
    Case(
        "help-says-5-is-credentials-refused",
        ("send", "--help"),
        0,
        "5  credentials refused: the gateway's (exits after one request), or the",
        lines=None,
    ),
    # -- 3. the package a store needs, by name ---------------------------------------------
    Case(
        "store-redis-without-the-extra",
        ("send", "--url", "{URL}", "--store", "redis://127.0.0.1:{CLOSED}/0", "x"),
        2,
        "needs the 'redis' package: pip install 'sslsms-notify[redis]' (from a checkout: "
        "pip install '.[redis]')",
        setup=redis_not_installed,
        env={"PYTHONPATH": "{TMP}/shadow"},
        check=nothing_sent,
    ),
    Case(
        "key-empty",
        ("send", "--url", "{URL}", "--key", "", "x"),
        2,
        "--key='': must be a key of 1 to 200 characters",
    ),
    Case(
        "source-newline",
        ("send", "--url", "{URL}", "--source", "a\nb", "x"),
        2,
        "--source='a\\nb': must be a name",
    ),
    Case(
        "store-option-unknown",
        ("send", "--url", "{URL}", "--store", "foo://bar", "x"),
        2,
        "--store='foo://bar': must be memory",
    ),
    Case(
        "store-unwritable-sqlite",
        ("send", "--url", "{URL}", "--store", "sqlite:///{TMP}/a-file/state.db", "x"),
        2,
        "cannot open",
        files={"a-file": "not a directory"},
    ),
    Case("unknown-option", ("send", "--url", "{URL}", "--colour", "x"), 2, "No such option '--colour'"),
    Case(
        "segments-max-zero",
        ("segments", "--max-segments", "0", "x"),
        2,
        "'--max-segments': 0 is not in the range 1<=x<=15",
    ),
    Case("segments-not-utf8", ("segments", b"\xff"), 2, "TEXT is not valid UTF-8"),
    # -- 9. segments: which limit cuts, and no empty text ----------------------------------
    Case(
        "segments-over-the-gateway-limit-not-the-budget",
        ("segments", "--max-segments", "15", "x" * 1200),
        0,
        "over the gateway's 1000-character limit; would send: xxx",
        lines=2,
        check=only_the_gateway_limit,
    ),
    Case(
        "segments-over-both",
        ("segments", "--max-segments", "2", "x" * 1200),
        0,
        "over 2 SMS and over the gateway's 1000-character limit; would send: ",
        lines=2,
    ),
    Case("segments-empty", ("segments", ""), 2, "TEXT is empty"),
    Case("segments-empty-stdin", ("segments",), 2, "standard input is empty", stdin=b""),
    # -- numbers versus group names --------------------------------------------------------
    Case(
        "short-number-with-groups-gets-the-number-rule",
        ("send", "--config", "{TMP}/c.toml", "--to", "0171234", "x"),
        2,
        "--to '0171234' is not a valid number: Bangladesh mobile numbers are 01[3-9] followed by 8 digits",
        files={"c.toml": TOML_URL + GROUPS},
    ),
    Case(
        "group-typo",
        ("send", "--config", "{TMP}/c.toml", "--to", "oncal", "x"),
        2,
        "--to 'oncal': no such group (groups: dbas, default, oncall)",
        files={"c.toml": TOML_URL + GROUPS},
    ),
    Case(
        "number-with-separators",
        ("send", "--config", "{TMP}/c.toml", "--to", "+880 1811-111111", "x"),
        0,
        "delivered: sms=1",
        files={"c.toml": TOML_URL + GROUPS},
    ),
    # -- 10. the number rule names every separator it accepts --------------------------------
    Case(
        "to-number-with-a-plus-inside",
        ("send", "--url", "{URL}", "--to", "0171+1111111", "x"),
        2,
        "--to '0171+1111111' is not a valid number: may contain only digits, an optional leading '+', "
        "spaces, dashes, dots, parentheses and slashes",
    ),
    Case(
        "to-file-number-with-a-plus-inside",
        ("send", "--url", "{BARE}", "--to-file", "{TMP}/numbers.txt", "x"),
        2,
        "--to-file line 1: '(017) 11+11.1111' is not a valid number: may contain only digits",
        files={"numbers.txt": "(017) 11+11.1111\n"},
    ),
    Case(
        "to-empty",
        ("send", "--url", "{URL}", "--to", "", "x"),
        2,
        "--to '': give a phone number or a group name",
    ),
    Case(
        "to-file-indented-comments-and-blank-lines",
        ("send", "--url", "{BARE}", "--to-file", "{TMP}/numbers.txt", "x"),
        0,
        "delivered: sms=2",
        files={"numbers.txt": "  # on call\n\n\t# backup\n01811111111  # Rahim\n   \n01911111111\n"},
    ),
    Case(
        "to-file-bad-number-names-the-line",
        ("send", "--url", "{BARE}", "--to-file", "{TMP}/numbers.txt", "x"),
        2,
        "--to-file line 3: '0171234' is not a valid number",
        files={"numbers.txt": "# list\n01811111111\n0171234\n"},
    ),
    Case(
        "to-file-not-utf8",
        ("send", "--url", "{BARE}", "--to-file", "{TMP}/numbers.txt", "x"),
        2,
        "--to-file line 2: not valid UTF-8 (byte 0xff)",
        files={"numbers.txt": b"01811111111\n\xff\n"},
    ),
    Case(
        "to-file-missing",
        ("send", "--url", "{BARE}", "--to-file", "{TMP}/nope.txt", "x"),
        2,
        "cannot read: No such file or directory",
    ),
    Case("to-file-directory", ("send", "--url", "{BARE}", "--to-file", "{TMP}", "x"), 2, "is a directory"),
    # -- TOML -----------------------------------------------------------------------------
    Case(
        "toml-dedup-five",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "c.toml: pipeline.dedup_window='five': must be a number of seconds from 0 to 2592000",
        files={"c.toml": TOML_URL + '[pipeline]\ndedup_window = "five"\n'},
    ),
    Case(
        "toml-groups-five",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "c.toml: groups=5: must be a table of group names",
        files={"c.toml": TOML_URL + "groups = 5\n"},
    ),
    Case(
        "toml-url-five",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "c.toml: url=5: must be an sslsms:// URL string",
        files={"c.toml": "url = 5\n"},
    ),
    Case(
        "toml-group-as-string-is-one-number",
        ("send", "--config", "{TMP}/c.toml", "--to", "oncall", "x"),
        0,
        "delivered: sms=1",
        files={"c.toml": TOML_URL + '[groups]\noncall = "01811111111"\n'},
    ),
    Case(
        "toml-group-bad-number",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "groups.oncall[1] '0' is not a valid number",
        files={"c.toml": TOML_URL + '[groups]\noncall = ["01811111111", "0"]\n'},
    ),
    Case(
        "toml-group-named-like-a-number",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "groups.017='017': a group name must not look like a phone number",
        files={"c.toml": TOML_URL + '[groups]\n"017" = ["01811111111"]\n'},
    ),
    Case(
        "toml-key-in-wrong-section",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "unknown top-level key 'dedup_window' (it belongs in [pipeline])",
        files={"c.toml": TOML_URL + "dedup_window = 60\n"},
    ),
    Case(
        "toml-route-to-unknown-group",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "routes[0].groups='nope': no such group",
        files={"c.toml": TOML_URL + '[[routes]]\ngroups = ["nope"]\n'},
    ),
    Case(
        "toml-tps-bool",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "pipeline.tps=True: must be a number",
        files={"c.toml": TOML_URL + "[pipeline]\ntps = true\n"},
    ),
    Case(
        "toml-syntax",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "c.toml: not valid TOML: ",
        files={"c.toml": "[gateway\n"},
    ),
    Case(
        "toml-not-utf8",
        ("send", "--config", "{TMP}/c.toml", "x"),
        2,
        "c.toml: not valid UTF-8 (byte 0xff at offset 7)",
        files={"c.toml": b'url = "\xff"\n'},
    ),
    Case(
        "toml-missing",
        ("send", "--config", "{TMP}/nope.toml", "x"),
        2,
        "nope.toml: cannot read: No such file or directory",
    ),
    Case("toml-directory", ("send", "--config", "{TMP}", "x"), 2, "is a directory"),
    Case(
        "toml-directory-from-env",
        ("config", "check"),
        2,
        "is a directory, not a TOML file",
        env={"SSLSMS_CONFIG": "{TMP}"},
    ),
    Case(
        "toml-without-token",
        ("config", "check", "--config", "{TMP}/c.toml"),
        2,
        "api_token is missing",
        files={"c.toml": '[gateway]\nsid = "EMULATOR"\n'},
    ),
    # -- config check: accepted then broken, and secrets ----------------------------------
    Case(
        "check-timeout-zero",
        ("config", "check", "--url", "{URL}&timeout=0"),
        2,
        "timeout='0': must be a number of seconds greater than 0 and at most 300",
    ),
    Case("check-dedup-nan", ("config", "check", "--url", "{URL}&dedup=nan"), 2, "dedup='nan'"),
    Case(
        "check-level-loud",
        ("config", "check", "--url", "{URL}&level=LOUD"),
        2,
        "level='LOUD': must be one of debug, info, warning, error, critical",
    ),
    Case("check-cap-period-zero", ("config", "check", "--url", "{URL}&cap_period=0"), 2, "cap_period='0'"),
    Case(
        "check-masks-redis-password",
        (
            "config",
            "check",
            "--url",
            "sslsms://EMULATOR:emulator-token-0123456789@01711111111"
            f"?store=redis://:{SECRET}@127.0.0.1:{{CLOSED}}/0&base_url=http://admin:hunter2@127.0.0.1:1",
        ),
        6,
        "is unreachable",
        check=no_secret,  # 8a: the error only, nothing printed before it ("configuration OK")
    ),
    Case(
        "check-ok",
        ("config", "check", "--url", "{URL}"),
        0,
        "configuration OK (--url)",
        lines=None,
    ),
    # -- outbox ---------------------------------------------------------------------------
    Case(
        "outbox-store-unknown",
        ("outbox", "list", "--store", "foo://bar"),
        2,
        "--store='foo://bar': must be memory",
    ),
    Case(
        "outbox-redis-unreachable",
        ("outbox", "list", "--store", f"redis://:{SECRET}@127.0.0.1:{{CLOSED}}/0"),
        6,
        "is unreachable",
        check=no_secret,
    ),
    Case(
        "outbox-retry-unknown-id",
        ("outbox", "retry", "--store", "sqlite:///{TMP}/cli.db", "nosuchid"),
        2,
        "not dead letters in this outbox: nosuchid",
    ),
    Case(
        "outbox-retry-nothing",
        ("outbox", "retry", "--store", "sqlite:///{TMP}/cli.db"),
        2,
        "name CSMS_IDS or pass --all",
    ),
    Case(
        "outbox-list-empty",
        ("outbox", "list", "--store", "sqlite:///{TMP}/cli.db"),
        0,
        "0 waiting (0 in flight), 0 dead",
    ),
    # -- 11. in flight counted once; retry says who sends ------------------------------------
    Case(
        "outbox-list-counts-in-flight-once",
        ("outbox", "list", "--store", "sqlite:///{TMP}/cli.db"),
        0,
        "2 waiting (1 in flight), 0 dead",
        setup=pending_and_in_flight,
        lines=3,
    ),
    Case(
        "outbox-retry-says-the-next-run-sends",
        ("outbox", "retry", "--all", "--store", "sqlite:///{TMP}/cli.db"),
        0,
        "1 requeued; the next run (sslsms-notify send, or a relay on this store) sends them",
        setup=a_dead_letter,
        check=nothing_sent,
    ),
    # -- 2. purge asks, and without a terminal it refuses ------------------------------------
    Case(
        "purge-without-a-terminal-refuses",
        ("outbox", "purge", "--state", "pending", "--store", "sqlite:///{TMP}/cli.db"),
        2,
        "refusing to purge without --yes (standard input is not a terminal)",
        stdin=b"n\n",
        setup=lambda ctx: pending_in(ctx.tmp / "cli.db", "keepme00000000000001", due=600),
        check=still_pending,
    ),
    Case(
        "foreign-state-file-is-an-internal-error",
        ("outbox", "list", "--store", "sqlite:///{TMP}/foreign.db"),
        1,
        "internal error: OperationalError: ",
        setup=foreign_database,
    ),
    # -- emulator ------------------------------------------------------------------------
    Case(
        "emulator-port-in-use",
        ("emulator", "--port", "{CLOSED}"),
        2,
        "--port {CLOSED}: cannot listen on 127.0.0.1:{CLOSED}: Address already in use",
        setup=port_in_use,
    ),
    Case(
        "emulator-port-range",
        ("emulator", "--port", "70000"),
        2,
        "'--port': 70000 is not in the range 0<=x<=65535",
    ),
    Case("emulator-tps-zero", ("emulator", "--tps", "0"), 2, "'--tps': 0 is not in the range x>=1"),
    Case(
        "emulator-host-unknown",
        ("emulator", "--host", "no-such-host.invalid", "--port", "0"),
        2,
        "cannot listen on no-such-host.invalid",
    ),
    # -- apprise install ------------------------------------------------------------------------
    Case(
        "apprise-install-onto-a-file",
        ("apprise", "install", "--path", "{TMP}/a-file/plugins"),
        2,
        "--path '{TMP}/a-file/plugins': cannot write the loader",
        files={"a-file": "not a directory"},
    ),
]


def _env(ctx: Ctx) -> dict[str, str]:
    return {
        **os.environ,
        "HOME": str(ctx.tmp),
        "XDG_STATE_HOME": str(ctx.tmp / "state"),
        "SSLSMS_URL": "",
        "SSLSMS_CONFIG": "",
        "SSLSMS_API_TOKEN": "",
    }


@pytest.fixture
def ctx(sslsms_gateway, tmp_path):
    context = Ctx(sslsms_gateway, tmp_path, free_port())
    yield context
    for sock in context.keep:
        sock.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_input(case: Case, ctx: Ctx) -> None:
    for name, content in case.files.items():
        data = content if isinstance(content, bytes) else ctx.expand(content).encode()
        (ctx.tmp / name).write_bytes(data)
    if case.setup is not None:
        case.setup(ctx)
    args = [a if isinstance(a, bytes) else ctx.expand(a) for a in case.args]
    env = {**_env(ctx), **{k: ctx.expand(v) for k, v in case.env.items()}}
    started = time.monotonic()
    result = subprocess.run(
        [CLI, *args], env=env, input=case.stdin, capture_output=True, timeout=case.within + 30
    )
    elapsed = time.monotonic() - started
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == case.code, f"exit {result.returncode}\nstdout: {out}\nstderr: {err}"
    assert "Traceback" not in out + err
    assert TOKEN not in out + err
    answer = out if case.code == 0 else err
    if "--json" in case.args:
        answer = out
    lines = [line for line in answer.splitlines() if line.strip()]
    says = ctx.expand(case.says)
    assert any(says in line for line in lines), f"{says!r} not in {answer!r}"
    if case.lines is not None:
        assert len(lines) == case.lines, answer
    if case.code != 0 and "--json" not in case.args and case.quiet_stdout:
        assert out == "", out  # the answer to a failure goes to stderr only
    assert elapsed < case.within, f"took {elapsed:.1f}s"
    if case.check is not None:
        case.check(ctx, result)


def test_debug_shows_the_traceback_of_an_internal_error(ctx: Ctx) -> None:
    foreign_database(ctx)
    args = ["outbox", "list", "--store", f"sqlite:///{ctx.tmp}/foreign.db"]
    quiet = subprocess.run([CLI, *args], env=_env(ctx), capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 1 and "run with --debug for the traceback" in quiet.stderr
    loud = subprocess.run([CLI, "--debug", *args], env=_env(ctx), capture_output=True, text=True, timeout=60)
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def test_json_answer_to_rejected_input(ctx: Ctx) -> None:
    result = subprocess.run(
        [CLI, "send", "--json", "--url", ctx.url() + "&cap_period=0", "x"],
        env=_env(ctx),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr == ""
    assert json.loads(result.stdout) == {
        "outcome": "rejected",
        "error": "cap_period='0': must be a number of seconds greater than 0 and at most 2592000 (30 days)",
    }


def test_redis_down_keeps_the_sms_for_the_next_run(ctx: Ctx, tmp_path: Path, monkeypatch) -> None:
    """Redis and the gateway both down: exit 6, the SMS waits in the local spool; the next
    run with both back sends it (same Redis URL, so the same spool)."""
    port = free_port()
    store = f"redis://127.0.0.1:{port}/0"
    env = _env(ctx)
    monkeypatch.setenv("XDG_STATE_HOME", env["XDG_STATE_HOME"])  # where the spool is
    down = ctx.url(base=f"http://127.0.0.1:{ctx.closed_port}").replace(f"sqlite:///{ctx.tmp}/cli.db", store)
    first = subprocess.run(
        [CLI, "send", "--json", "--timeout", "2", "--url", down, "while everything is down"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 6, first.stdout + first.stderr
    assert json.loads(first.stdout)["outcome"] == "unreachable"
    assert "Traceback" not in first.stderr
    # it is in the spool (durable), backing off; the next run sends it once it is due
    spool = SQLiteStore(default_spool_path(store))
    due = spool.outbox_next_due()
    spool.close()
    assert due is not None
    time.sleep(max(0.0, due - time.time()))
    redis = RedisProcess(tmp_path)
    redis.port = port
    redis.start()
    try:
        up = ctx.url().replace(f"sqlite:///{ctx.tmp}/cli.db", store)
        second = subprocess.run(
            [CLI, "send", "--json", "--url", up, "everything is back"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 0, second.stdout + second.stderr
        texts = sorted(m.text.split(": ", 1)[1] for m in ctx.gateway.emulator.messages())
        assert texts == ["everything is back", "while everything is down"]
    finally:
        redis.kill()
