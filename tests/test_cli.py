"""The installed ``sslsms-notify`` as a subprocess, against the emulator server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .conftest import free_port

CLI = str(Path(sys.executable).parent / "sslsms-notify")


def run(*args: str, env: dict | None = None, stdin: str | None = None, timeout: float = 60):
    return subprocess.run(
        [CLI, *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def cli_env(sslsms_gateway, tmp_path) -> dict[str, str]:
    url = (
        f"sslsms://{sslsms_gateway.sid}:{sslsms_gateway.api_token}@01711111111"
        f"?base_url={sslsms_gateway.url}&store=sqlite:///{tmp_path}/cli.db"
    )
    return {"SSLSMS_URL": url, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}


def test_send_delivered_then_suppressed(sslsms_gateway, cli_env) -> None:
    first = run("send", "--json", "db1: disk 95% full", env=cli_env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["outcome"] == "delivered"
    second = run("send", "--json", "db1: disk 96% full", env=cli_env)  # same alert, shared store
    assert second.returncode == 3 and json.loads(second.stdout)["outcome"] == "suppressed"
    assert len(sslsms_gateway.emulator.messages()) == 1


def test_send_from_stdin_to_numbers_and_groups(sslsms_gateway, cli_env, tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"""
url = "{cli_env["SSLSMS_URL"]}"
[groups]
oncall = ["01811111111", "01911111111"]
""")
    result = run(
        "send",
        "--config",
        str(config),
        "--to",
        "oncall",
        "--to",
        "01511111111",
        env={**cli_env, "SSLSMS_URL": ""},
        stdin="piped alert text\n",
    )
    assert result.returncode == 0, result.stderr
    numbers = sorted(m.msisdn for m in sslsms_gateway.emulator.messages())
    assert numbers == ["8801511111111", "8801811111111", "8801911111111"]


def test_send_throttled_by_per_phone_cap(cli_env) -> None:
    env = {**cli_env, "SSLSMS_URL": cli_env["SSLSMS_URL"] + "&cap=1"}
    assert run("send", "first alert kind", env=env).returncode == 0
    assert run("send", "--json", "another alert kind", env=env).returncode == 4


def test_send_rejected_input(cli_env) -> None:
    result = run("send", "--to", "0123", "x", env=cli_env)
    assert result.returncode == 2 and "'0123'" in result.stderr


def test_send_blocked_number_is_rejected(sslsms_gateway, cli_env) -> None:
    sslsms_gateway.emulator.config.blocked_msisdns.add("8801711111111")
    result = run("send", "--json", "to a blocked phone", env=cli_env)
    assert result.returncode == 2 and json.loads(result.stdout)["outcome"] == "rejected"


def test_send_auth_failure(sslsms_gateway, cli_env) -> None:
    env = {**cli_env, "SSLSMS_URL": cli_env["SSLSMS_URL"].replace(sslsms_gateway.api_token, "wrong-token")}
    result = run("send", "--json", "--timeout", "1", "x", env=env)
    assert result.returncode == 5, result.stdout
    assert "wrong-token" not in result.stdout + result.stderr


def test_send_gateway_unreachable_keeps_it_for_later(sslsms_gateway, cli_env) -> None:
    env = {
        **cli_env,
        "SSLSMS_URL": cli_env["SSLSMS_URL"].replace(sslsms_gateway.url, f"http://127.0.0.1:{free_port()}"),
    }
    result = run("send", "--json", "--timeout", "1", "while the gateway is down", env=env)
    assert result.returncode == 6
    listing = run("outbox", "list", "--json", env=env)
    assert next(i["text"] for i in json.loads(listing.stdout)).endswith("while the gateway is down")
    # the next run, with the gateway back, delivers it
    assert run("send", "--json", "another one", env=cli_env).returncode == 0
    texts = sorted(m.text.split(": ", 1)[1] for m in sslsms_gateway.emulator.messages())
    assert texts == ["another one", "while the gateway is down"]


def test_to_file_with_many_numbers_uses_bulk(sslsms_gateway, cli_env, tmp_path) -> None:
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("# on-call list\n" + "\n".join(f"0171{n:07d}" for n in range(250)))
    result = run("send", "--to-file", str(numbers), "--json", "bulk notice", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["requests"] == 3
    assert len(sslsms_gateway.emulator.messages()) == 250


def test_segments() -> None:
    result = run("segments", "--json", "সার্ভার ডাউন")
    report = json.loads(result.stdout)
    assert report["encoding"] == "UCS-2" and report["segments"] == 1
    long = run("segments", "--max-segments", "1", "x" * 200)
    assert "GSM-7 (EN), 200 characters, 200 units, 2 SMS" in long.stdout
    assert "would send: " in long.stdout


def test_config_check_masks_token(cli_env, sslsms_gateway) -> None:
    result = run("config", "check", "--json", env=cli_env)
    assert result.returncode == 0
    assert sslsms_gateway.api_token not in result.stdout
    assert json.loads(result.stdout)["api_token"] == "****"
    bad = run("config", "check", env={**cli_env, "SSLSMS_URL": "sslsms://S:t@012"})
    assert bad.returncode == 2 and "URL recipient '012'" in bad.stderr


def test_outbox_retry_and_purge(sslsms_gateway, cli_env) -> None:
    sslsms_gateway.emulator.config.blocked_msisdns.add("8801711111111")
    run("send", "dead letter", env=cli_env)
    dead = json.loads(run("outbox", "list", "--state", "dead", "--json", env=cli_env).stdout)
    assert len(dead) == 1 and "Blocked MSISDN" in dead[0]["last_error"]
    sslsms_gateway.emulator.config.blocked_msisdns.clear()
    assert "1 requeued" in run("outbox", "retry", dead[0]["csms_id"], env=cli_env).stdout
    assert run("send", "unrelated trigger", env=cli_env).returncode == 0  # the next run delivers it
    assert len(sslsms_gateway.emulator.messages()) == 2
    sslsms_gateway.emulator.config.blocked_msisdns.add("8801711111111")
    run("send", "dead again", env=cli_env)
    assert "1 purged" in run("outbox", "purge", "--yes", env=cli_env).stdout


def test_emulator_command_serves_and_prints(tmp_path) -> None:
    port = free_port()
    proc = subprocess.Popen([CLI, "emulator", "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/__emulator/health", timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/v3/send-sms",
            json={
                "api_token": "emulator-token-0123456789",
                "sid": "EMULATOR",
                "msisdn": "01711111111",
                "sms": "printed live",
                "csms_id": "cli1",
            },
        ).json()
        assert answer["status_code"] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert "+8801711111111" in out and "printed live" in out


def test_demo_runs_without_network_or_account(tmp_path) -> None:
    result = run("demo", env={"SSLSMS_URL": "", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "[CRIT] web-1/shop.db: primary database down" in result.stdout
    assert "[ERROR +39 more since" in result.stdout


def test_help_has_examples() -> None:
    assert "Examples:" in run("send", "--help").stdout
    assert run("--version").returncode == 0


def test_progress_shows_on_a_terminal_only(sslsms_gateway, cli_env, tmp_path) -> None:
    import pty

    numbers = tmp_path / "many.txt"
    numbers.write_text("\n".join(f"0181{n:07d}" for n in range(300)))
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [CLI, "send", "--to-file", str(numbers), "progress please"],
        env={**os.environ, **cli_env},
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(60)
    os.close(controller)
    assert proc.returncode == 0
    assert b"sending" in seen
    quiet = run("send", "--to-file", str(numbers), "piped, no progress", env=cli_env)
    assert quiet.returncode == 0 and "sending" not in quiet.stderr


def test_on_a_terminal_send_says_what_it_waits_for(sslsms_gateway, cli_env) -> None:
    """A gateway that fails: the terminal shows the retry, its reason and when next; then it arrives."""
    import pty

    sslsms_gateway.emulator.faults.http_error(502, count=4)
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [CLI, "send", "--timeout", "60", "db1: disk full"],
        env={**os.environ, **cli_env},
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        proc.wait(90)
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, seen
    assert b"retrying after: HTTP 502 from gateway" in seen and b"(attempt " in seen, seen
    piped = run("send", "db2: disk full", env=cli_env)  # no terminal: no status line
    assert piped.returncode == 0 and "retrying" not in piped.stderr


def test_group_wait_waits_for_the_group_sms_or_says_buffered(sslsms_gateway, cli_env) -> None:
    env = {**cli_env, "SSLSMS_URL": cli_env["SSLSMS_URL"] + "&group_wait=2"}
    started = time.monotonic()
    first = run("send", "--json", "db1 down", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["outcome"] == "delivered" and time.monotonic() - started >= 2
    # due after --timeout: not waited for; the alert is in the store for the next run
    second = run("send", "--json", "--timeout", "1", "db2 down", env=env)
    assert second.returncode == 0 and json.loads(second.stdout)["outcome"] == "buffered"
    third = run("send", "--json", "db3 down", env=env)  # joins the same buffer, and waits for it
    assert json.loads(third.stdout)["outcome"] == "delivered"
    texts = [m.text for m in sslsms_gateway.emulator.messages()]
    assert len(texts) == 2 and texts[1].startswith("[2 alerts]") and "db2 down" in texts[1]


def test_to_file_comments_and_to_lists(sslsms_gateway, cli_env, tmp_path) -> None:
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("   # indented comment\n\n01811111111   # Rahim\n\t#\n")
    result = run(
        "send", "--json", "--to-file", str(numbers), "--to", "01911111111,01511111111", "x", env=cli_env
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["delivered"] == 3
    assert sorted(m.msisdn for m in sslsms_gateway.emulator.messages()) == [
        "8801511111111",
        "8801811111111",
        "8801911111111",
    ]


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_stops_waiting_and_the_next_run_sends_it(sslsms_gateway, cli_env, inherited) -> None:
    """SIGINT while the gateway hangs: exit 130 at once, one line, the SMS stays in the
    outbox; the next run, with the gateway healthy, delivers it. "ignored": started with
    SIGINT ignored, as a shell script's background job is (Python then never raises
    KeyboardInterrupt unless send takes the signal back)."""
    sslsms_gateway.emulator.faults.outage(60, mode="timeout", hold=30)

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [CLI, "send", "while the gateway hangs"],
        env={**os.environ, **cli_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint if inherited == "ignored" else None,
    )
    try:
        # send is waiting on the hanging request: the gateway has it
        deadline = time.monotonic() + 30
        while not sslsms_gateway.emulator.history() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sslsms_gateway.emulator.history(), "send never reached the gateway"
        interrupted_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - interrupted_at < 3
    assert proc.returncode == 130, out + err
    assert out == ""
    assert err.splitlines() == ["interrupted: the SMS waits in the outbox; the next run sends it"]
    listing = json.loads(run("outbox", "list", "--json", env=cli_env).stdout)
    assert [i["text"].split(": ", 1)[1] for i in listing] == ["while the gateway hangs"]

    sslsms_gateway.emulator.faults.clear()
    after = run("send", "--json", "the gateway is back", env=cli_env)
    assert after.returncode == 0, after.stdout + after.stderr
    texts = sorted(m.text.split(": ", 1)[1] for m in sslsms_gateway.emulator.messages())
    assert texts == ["the gateway is back", "while the gateway hangs"]
    assert json.loads(run("outbox", "list", "--json", env=cli_env).stdout) == []


def test_library_logs_only_with_debug(sslsms_gateway, cli_env) -> None:
    """Errors are one line: the pipeline's own log lines show with --debug only."""
    env = {**cli_env, "SSLSMS_URL": cli_env["SSLSMS_URL"].replace(sslsms_gateway.api_token, "wrong-token")}
    quiet = run("send", "--timeout", "2", "x", env=env)
    assert quiet.returncode == 5
    assert quiet.stderr.splitlines() == [quiet.stderr.strip()] and quiet.stderr.startswith("auth_failed: ")
    loud = run("--debug", "send", "--timeout", "2", "y", env=env)
    assert loud.returncode == 5
    assert "gateway refused our credentials" in loud.stderr


def test_default_state_is_per_account_and_shared_with_config_check(sslsms_gateway, tmp_path) -> None:
    """Without a store, send and config check agree on the account's own state file."""
    from sslsms_notify.config import account_id

    url = (
        f"sslsms://{sslsms_gateway.sid}:{sslsms_gateway.api_token}@01711111111?base_url={sslsms_gateway.url}"
    )
    env = {"SSLSMS_URL": url, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    expected = tmp_path / "state" / "sslsms-notify" / f"state-{account_id('EMULATOR', sslsms_gateway.url)}.db"
    check = json.loads(run("config", "check", "--json", env=env).stdout)
    assert check["store"] == f"sqlite:///{expected}" and check["configured_store"] == "memory"
    assert run("send", "x", env=env).returncode == 0
    assert expected.exists() and not (tmp_path / "state" / "sslsms-notify" / "state.db").exists()


def test_severity_aliases_are_the_relay_api_s() -> None:
    from sslsms_notify.cli import SEVERITIES, SEVERITY_ALIASES
    from sslsms_notify.relay.payloads import _ALIASES

    assert {**{s: s for s in SEVERITIES}, **SEVERITY_ALIASES} == dict(_ALIASES)


def test_config_check_online_asks_the_gateway_about_the_credentials(sslsms_gateway, cli_env) -> None:
    ok = run("config", "check", "--online", env=cli_env)
    assert ok.returncode == 0 and "credentials not refused" in ok.stdout and "only a real SMS" in ok.stdout
    assert sslsms_gateway.emulator.messages() == []  # it sent nothing
    wrong = {**cli_env, "SSLSMS_URL": cli_env["SSLSMS_URL"].replace(sslsms_gateway.api_token, "x" * 24)}
    refused = run("config", "check", "--online", "--json", env=wrong)
    assert refused.returncode == 5 and json.loads(refused.stdout)["gateway"] == "refused: [4001] Unauthorized"
    assert "x" * 24 not in refused.stdout + refused.stderr


def test_which_configuration_was_used_and_which_was_shadowed(sslsms_gateway, cli_env, tmp_path) -> None:
    """A config file from an earlier step wins over SSLSMS_URL: both config check and a send
    that does not deliver say so."""
    config = tmp_path / ".config" / "sslsms-notify" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{cli_env["SSLSMS_URL"].replace("01711111111", "01811111111")}"\n')
    check = run("config", "check", env=cli_env)
    assert check.returncode == 0 and f"configuration OK ({config})" in check.stdout
    assert "shadowed: SSLSMS_URL" in check.stdout
    assert json.loads(run("config", "check", "--json", env=cli_env).stdout)["sources"] == [
        {"source": str(config), "part": "used"},
        {"source": "SSLSMS_URL", "part": "shadowed"},
    ]
    unrouted = run("send", "--json", "--to", "nosuchgroup", "db1 down", env=cli_env)
    payload = json.loads(unrouted.stdout)
    assert unrouted.returncode == 2
    assert (payload["config"], payload["shadowed"]) == (str(config), "SSLSMS_URL")
