"""An international number, written as the policy asks (+ or 00), pages through every door.

The number is checked where it enters, then handed on in our form (a group to the
Notifier's routes, a ``--to`` to the alert, targets into the apprise URL) and checked
again there: it must pass the second time too. Counted at the emulator: the gateway gets
digits only (``14155551234``), exactly once per door.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import apprise
import httpx

import sslsms_notify.integrations.apprise as plugin
from sslsms_notify import GatewayClient, Notifier, SMSHandler
from sslsms_notify.relay.server import RelayServer
from sslsms_notify.relay.settings import RelaySettings

from .conftest import FAST_RETRY

CLI = str(Path(sys.executable).parent / "sslsms-notify")
US, UK = "+1 (415) 555-1234", "0044 7911 123456"
US_WIRE, UK_WIRE = "14155551234", "447911123456"
TOKEN = "relay-token-for-number-tests-01"


def got(gateway, wire: str) -> list[str]:
    return [m.text for m in gateway.emulator.messages() if m.msisdn == wire]


def test_notifier_groups_and_recipients(sslsms_gateway) -> None:
    client = GatewayClient(sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url)
    with Notifier(client, recipients=[US], groups={"abroad": [UK]}, close_at_exit=None) as n:
        assert n.submit("to the default group").wait(10)
        assert n.submit("to the group abroad", groups=["abroad"]).wait(10)
        assert n.submit("to a number named directly", groups=["+44 7911 123456"]).wait(10)
        assert n.flush(15)
    assert len(got(sslsms_gateway, US_WIRE)) == 1
    assert len(got(sslsms_gateway, UK_WIRE)) == 2


def test_config_file_groups_and_send_to(sslsms_gateway, tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[gateway]\nsid = "{sslsms_gateway.sid}"\napi_token = "{sslsms_gateway.api_token}"\n'
        f'base_url = "{sslsms_gateway.url}"\n\n[pipeline]\nstore = "sqlite:///{tmp_path}/s.db"\n\n'
        f'[groups]\nabroad = ["{US}", "01711111111"]\n'
    )
    env = {**os.environ, "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("SSLSMS_URL", None)
    for args in (["--to", "abroad", "to the group"], ["--to", UK, "to a number"]):
        result = subprocess.run(
            [CLI, "send", "--config", str(config), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    assert len(got(sslsms_gateway, US_WIRE)) == 1
    assert len(got(sslsms_gateway, UK_WIRE)) == 1
    assert len(got(sslsms_gateway, "8801711111111")) == 1


def test_logging_handler_recipients_and_groups(sslsms_gateway) -> None:
    handler = SMSHandler(
        api_token=sslsms_gateway.api_token,
        sid=sslsms_gateway.sid,
        base_url=sslsms_gateway.url,
        recipients=[US],
        groups={"abroad": [UK]},
        logger_groups={"app.abroad": ["abroad"]},
    )
    logger = logging.getLogger("app.numbers")
    abroad = logging.getLogger("app.abroad")
    try:
        for log in (logger, abroad):
            log.addHandler(handler)
            log.propagate = False
        logger.error("default group")
        abroad.error("group abroad")
        assert handler.notifier.flush(15)
    finally:
        for log in (logger, abroad):
            log.removeHandler(handler)
            log.propagate = True
        handler.close()
    assert got(sslsms_gateway, US_WIRE) and got(sslsms_gateway, UK_WIRE)
    assert len(sslsms_gateway.emulator.messages()) == 2


def test_apprise_targets(sslsms_gateway) -> None:
    a = apprise.Apprise()
    try:
        url = f"sslsms://{sslsms_gateway.sid}:{sslsms_gateway.api_token}@+14155551234/01711111111"
        assert a.add(f"{url}?base_url={sslsms_gateway.url}")
        assert bool(a.notify("to both"))
    finally:
        plugin.close_pipelines(5)
    assert len(got(sslsms_gateway, US_WIRE)) == 1
    assert len(got(sslsms_gateway, "8801711111111")) == 1


def test_relay_api_with_allow_numbers(sslsms_gateway) -> None:
    client = GatewayClient(
        sslsms_gateway.api_token, sslsms_gateway.sid, base_url=sslsms_gateway.url, retry=FAST_RETRY
    )
    notifier = Notifier(client, groups={"abroad": [UK]}, close_at_exit=None)
    settings = RelaySettings(listen="127.0.0.1:0", tokens=(TOKEN,), allow_numbers=True).checked()
    relay = RelayServer(notifier, settings).start()
    try:
        with httpx.Client(base_url=relay.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for groups in (["abroad"], ["+1 415 555 1234"]):
                answer = http.post("/v1/alerts", json={"text": f"to {groups[0]}", "groups": groups})
                assert answer.status_code == 202, answer.text
        assert notifier.flush(15)
    finally:
        relay.stop(5)
    assert len(got(sslsms_gateway, UK_WIRE)) == 1
    assert len(got(sslsms_gateway, US_WIRE)) == 1
