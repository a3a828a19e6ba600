"""``sslsms-notify serve`` and ``send --relay`` as an operator runs them: real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.emulator import EmulatorServer

from .conftest import free_port, installed

pytestmark = pytest.mark.slow
TOKEN = "serve-relay-token-for-tests-01"
CLI = str(Path(sys.executable).with_name("sslsms-notify"))
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "relay"


def write_config(path: Path, gateway: EmulatorServer, store: str, **relay: object) -> Path:
    relay_lines = "\n".join(
        f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}" for k, v in relay.items()
    )
    path.write_text(
        textwrap.dedent(
            f"""
            url = "sslsms://{gateway.sid}:{gateway.api_token}@01711111111?base_url={gateway.url}"

            [pipeline]
            store = "{store}"
            per_recipient_limit = 0

            [groups]
            oncall = ["01711111111"]
            dba = ["01811111111"]

            [relay]
            """
        )
        + relay_lines
        + "\n"
    )
    return path


@contextmanager
def serve(config: Path, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {**os.environ, "SSLSMS_RELAY_TOKENS": TOKEN, "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = subprocess.Popen(
        [CLI, "serve", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def post(url: str, body: object, path: str = "/v1/alerts") -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def test_sigterm_closes_within_its_timeout_and_loses_nothing(sslsms_gateway, tmp_path) -> None:
    store = f"sqlite:///{tmp_path}/relay.db"
    config = write_config(tmp_path / "relay.toml", sslsms_gateway, store, shutdown_timeout=4.0)
    sslsms_gateway.emulator.faults.outage(60, mode="timeout", hold=30)  # the gateway hangs
    with serve(config, tmp_path) as (url, proc):
        for i in range(5):
            assert post(url, {"text": f"accepted before SIGTERM {i}", "key": f"k{i}"}).status_code == 202
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        took = time.monotonic() - started
    assert took <= 4 + 1, f"shutdown took {took:.1f} s"
    assert proc.returncode == 6  # undelivered, kept in the durable outbox
    sslsms_gateway.emulator.faults.clear()
    client = GatewayClient(sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url)
    after = Notifier(client, recipients=["01711111111"], store=store, close_at_exit=None)
    assert after.flush(20)
    sent = sorted(m.text.split("] ", 1)[1] for m in sslsms_gateway.emulator.messages())
    assert sent == [f"accepted before SIGTERM {i}" for i in range(5)]
    after.close(5)


def test_two_serve_processes_on_one_redis_send_each_sms_once(sslsms_gateway, redis_url, tmp_path) -> None:
    config = write_config(tmp_path / "relay.toml", sslsms_gateway, redis_url)
    with serve(config, tmp_path) as (one, _), serve(config, tmp_path) as (two, _):
        for i in range(30):
            body = {"text": f"seen by both relays {i}", "key": f"both{i}", "groups": ["oncall", "dba"]}
            assert post(one, body).status_code == 202
            assert post(two, body).status_code == 202
        deadline = time.monotonic() + 20
        while len(sslsms_gateway.emulator.messages()) < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
    # both relays have stopped: whatever either would send, it has sent
    sent = [(m.msisdn, m.text) for m in sslsms_gateway.emulator.messages()]
    assert len(sent) == 60 and len(set(sent)) == 60


def relay_send(
    url: str, *args: str, token: str = TOKEN, timeout: str = "15"
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SSLSMS_RELAY_TOKEN": token}
    env.pop("SSLSMS_URL", None)
    return subprocess.run(
        [CLI, "send", "--relay", url, "--timeout", timeout, "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_send_relay_keeps_the_exit_codes(sslsms_gateway, tmp_path) -> None:
    config = write_config(tmp_path / "relay.toml", sslsms_gateway, f"sqlite:///{tmp_path}/r.db")
    with serve(config, tmp_path) as (url, _):
        assert relay_send(url, "--to", "dba", "via the relay").returncode == 0
        assert relay_send(url, "--to", "dba", "via the relay").returncode == 3  # a repeat
        wrong = relay_send(url, "--to", "dba", "x", token="not-the-relay-token-at-all")
        assert wrong.returncode == 5 and TOKEN not in wrong.stdout + wrong.stderr
        assert relay_send(url, "--to", "nosuchgroup", "y").returncode == 2
        sslsms_gateway.stop()
        try:
            down = relay_send(url, "--to", "oncall", "while the gateway is down", timeout="2")
            assert down.returncode == 6, down.stdout  # waits in the relay's outbox
        finally:
            sslsms_gateway.start()
    gone = relay_send(url, "--to", "dba", "nobody listens", timeout="2")
    assert gone.returncode == 7 and "relay" in gone.stdout
    assert [m.text.split("] ", 1)[1] for m in sslsms_gateway.emulator.messages("01811111111")] == [
        "via the relay"
    ]


def test_serve_without_a_token_is_one_clear_line(sslsms_gateway, tmp_path) -> None:
    config = write_config(tmp_path / "relay.toml", sslsms_gateway, "memory")
    env = {k: v for k, v in os.environ.items() if k != "SSLSMS_RELAY_TOKENS"}
    result = subprocess.run(
        [CLI, "serve", "--config", str(config)], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "no relay token" in result.stderr and "Traceback" not in result.stderr


def test_the_relay_example_passes_config_check(tmp_path) -> None:
    # The example as shipped, only its store moved to a file this test may write.
    example = (EXAMPLES / "relay.toml").read_text()
    store_line = 'store = "sqlite:////var/lib/sslsms-notify/relay.db"'
    assert store_line in example
    config = tmp_path / "relay.toml"
    config.write_text(example.replace(store_line, f'store = "sqlite:///{tmp_path}/relay.db"'))
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path), "SSLSMS_RELAY_TOKENS": TOKEN}
    checked = subprocess.run(
        [CLI, "config", "check", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the example's placeholder token is shadowed by the environment's, and says so
    assert "shadowed: SSLSMS_RELAY_TOKENS shadows [relay] tokens" in checked.stdout
    assert TOKEN not in checked.stdout and "'tokens': '<1 hidden>'" in checked.stdout
    # without the environment's token, config check refuses what serve would refuse
    env.pop("SSLSMS_RELAY_TOKENS")
    refused = subprocess.run(
        [CLI, "config", "check", "--config", str(config)], env=env, capture_output=True, text=True, timeout=30
    )
    assert refused.returncode == 2
    assert "relay tokens[0]: is a placeholder from an example" in refused.stderr
    from sslsms_notify.config import read_section
    from sslsms_notify.relay.settings import RelaySettings

    relay = read_section(EXAMPLES / "relay.toml", "relay")
    assert RelaySettings.load(relay, environ={"SSLSMS_RELAY_TOKENS": TOKEN}).loopback


def test_the_alertmanager_example_passes_amtool() -> None:
    amtool = installed("amtool", "prometheus-alertmanager")
    result = subprocess.run(
        [amtool, "check-config", str(EXAMPLES / "alertmanager.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
