"""``sslsms-notify heartbeat`` and ``ack`` as subprocesses: on the store, and through a real relay."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import EmulatorServer
from sslsms_notify.relay.server import RelayServer
from sslsms_notify.relay.settings import RelaySettings

from .conftest import FAST_RETRY, free_port
from .test_cli import run

TOKEN = "relay-token-for-tests-0001"
ONCALL, MANAGER = "01711111111", "01911111111"


@pytest.fixture
def config(sslsms_gateway: EmulatorServer, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A config with an escalating route, its store a SQLite file; and the environment to run in."""
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
url = "sslsms://{sslsms_gateway.sid}:{sslsms_gateway.api_token}@{ONCALL}?base_url={sslsms_gateway.url}"
[pipeline]
store = "sqlite:///{tmp_path}/state.db"
[groups]
oncall = ["{ONCALL}"]
managers = ["{MANAGER}"]
[[routes]]
groups = ["oncall"]
min_severity = "critical"
escalate_after = "15m"
escalate_to = ["managers"]
[[routes]]
groups = ["oncall"]
"""
    )
    env = {
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "SSLSMS_URL": "",
        "SSLSMS_RELAY": "",
    }
    return path, env


def test_heartbeat_ping_list_and_delete_on_the_store(config) -> None:
    path, env = config
    new = run("heartbeat", "ping", "backup", "--config", str(path), env=env)
    assert new.returncode == 2 and "every: required for a new heartbeat" in new.stderr
    created = run("heartbeat", "backup", "--every", "24h", "--to", "oncall", "--config", str(path), env=env)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("backup: created (every 24h, grace 1h; pages oncall if silent past ")
    again = run("heartbeat", "ping", "backup", "--json", "--config", str(path), env=env)  # options kept
    body = json.loads(again.stdout)
    assert (body["status"], body["every"], body["grace"], body["groups"]) == (
        "alive",
        86400,
        3600,
        ["oncall"],
    )
    listed = json.loads(run("heartbeat", "list", "--json", "--config", str(path), env=env).stdout)
    assert [(b["name"], b["missed"]) for b in listed] == [("backup", False)]
    for args, said in [
        (["heartbeat", "ping", "bad name", "--every", "1h"], "name='bad name': must be 1 to 64 letters"),
        (["heartbeat", "ping", "x", "--every", "soon"], "every='soon': must be a duration"),
        (["heartbeat", "ping", "x", "--every", "1h", "--to", "nobody"], "unknown group 'nobody'"),
        (["heartbeat", "delete", "never-made"], "no heartbeat named 'never-made'"),
    ]:
        refused = run(*args, "--config", str(path), env=env)
        assert refused.returncode == 2 and said in refused.stderr, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1
    assert run("heartbeat", "delete", "backup", "--config", str(path), env=env).returncode == 0
    assert json.loads(run("heartbeat", "list", "--json", "--config", str(path), env=env).stdout) == []


def test_ack_on_the_store(config, sslsms_gateway: EmulatorServer) -> None:
    path, env = config
    sent = run("send", "--severity", "critical", "--config", str(path), "db1 down", env=env)
    assert sent.returncode == 0, sent.stderr
    [text] = [m.text for m in sslsms_gateway.emulator.messages(ONCALL)]
    alert, code = text.rsplit(" ack:", 1)  # "[CRIT] <host>: db1 down", and its code
    wrong = run("ack", "Z" * 6 if code != "Z" * 6 else "Y" * 6, "--config", str(path), env=env)
    assert wrong.returncode == 2 and "no alert waits for this code" in wrong.stderr
    malformed = run("ack", "12", "--config", str(path), env=env)
    assert malformed.returncode == 2 and "must be the 6 characters after 'ack:'" in malformed.stderr
    acked = run("ack", code.lower(), "--config", str(path), env=env)
    assert acked.returncode == 0 and acked.stdout.strip() == f"acknowledged: {alert}", acked.stderr
    again = run("ack", code, "--json", "--config", str(path), env=env)
    assert again.returncode == 0
    assert json.loads(again.stdout) | {"closed_at": 0, "escalates_at": 0} == {
        "status": "closed",
        "code": code,
        "alert": alert,
        "state": "acked",
        "closed_by": "cli",
        "closed_at": 0,
        "escalates_at": 0,
    }


@pytest.fixture
def relay(sslsms_gateway: EmulatorServer, tmp_path: Path) -> Iterator[RelayServer]:
    notifier = Notifier(
        GatewayClient(
            sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url, retry=FAST_RETRY
        ),
        groups={"oncall": [ONCALL], "managers": [MANAGER]},
        routes=[
            {
                "groups": ["oncall"],
                "min_severity": "critical",
                "escalate_after": "15m",
                "escalate_to": ["managers"],
            }
        ],
        store=f"sqlite:///{tmp_path}/relay.db",
        per_recipient_limit=None,
        dispatch=DispatchPolicy(tps=1000),
        close_at_exit=None,
    )
    server = RelayServer(notifier, RelaySettings(listen="127.0.0.1:0", tokens=(TOKEN,)).checked()).start()
    yield server
    server.stop(5)


def test_heartbeat_and_ack_through_a_relay(relay: RelayServer, sslsms_gateway: EmulatorServer) -> None:
    env = {"SSLSMS_RELAY_TOKEN": TOKEN, "SSLSMS_URL": "", "HOME": "/nonexistent"}
    pinged = run("heartbeat", "backup", "--every", "1h", "--relay", relay.url, env=env)
    assert pinged.returncode == 0 and pinged.stdout.startswith("backup: created (every 1h"), pinged.stderr
    listed = run("heartbeat", "list", "--json", "--relay", relay.url, env=env)
    assert [b["name"] for b in json.loads(listed.stdout)] == ["backup"]
    bad = run("heartbeat", "x", "--every", "soon", "--relay", relay.url, env=env)
    assert bad.returncode == 2 and "every='soon'" in bad.stderr
    ticket = relay.notifier.submit("db1 down", severity="critical", host="")
    assert ticket.wait(10)
    assert relay.notifier.flush(10)
    code = sslsms_gateway.emulator.messages(ONCALL)[0].text.rsplit("ack:", 1)[1]
    acked = run("ack", code, "--relay", relay.url, env=env)
    assert acked.returncode == 0 and acked.stdout.startswith("acknowledged: [CRIT] db1 down"), acked.stderr
    unknown = run("ack", "Z" * 6 if code != "Z" * 6 else "Y" * 6, "--relay", relay.url, env=env)
    assert unknown.returncode == 2 and "no alert waits for this code" in unknown.stderr
    refused = run(
        "ack", code, "--relay", relay.url, env={**env, "SSLSMS_RELAY_TOKEN": "wrong-token-but-long"}
    )
    assert refused.returncode == 5 and "refused the token" in refused.stderr
    away = run("heartbeat", "backup", "--relay", f"http://127.0.0.1:{free_port()}", env=env)
    assert away.returncode == 7
    no_token = run("ack", code, "--relay", relay.url, env={**env, "SSLSMS_RELAY_TOKEN": ""})
    assert no_token.returncode == 2 and "SSLSMS_RELAY_TOKEN is not set" in no_token.stderr
