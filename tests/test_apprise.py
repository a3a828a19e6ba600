"""The apprise plugin: Apprise().notify(), and the real apprise CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import apprise
import pytest

import sslsms_notify.integrations.apprise as plugin

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def url_for(gateway, *numbers: str, **args: object) -> str:
    query = "&".join([f"base_url={gateway.url}", *(f"{k}={v}" for k, v in args.items())])
    return f"sslsms://{gateway.sid}:{gateway.api_token}@{'/'.join(numbers or ('01711111111',))}?{query}"


def test_notify_batches_numbers_into_one_bulk(sslsms_gateway) -> None:
    numbers = [f"0171{n:07d}" for n in range(150)]
    notifier = apprise.Apprise()
    assert notifier.add(url_for(sslsms_gateway, *numbers))
    assert notifier.notify(body="maintenance at 02:00", title="Heads up")
    messages = sslsms_gateway.emulator.messages()
    assert len(messages) == 150 and {m.endpoint for m in messages} == {"bulk"}
    assert sslsms_gateway.emulator.stats()["requests"] == 2
    assert messages[0].text == "[INFO] " + messages[0].text.split("] ", 1)[1]


def test_notify_type_sets_severity(sslsms_gateway) -> None:
    notifier = apprise.Apprise()
    notifier.add(url_for(sslsms_gateway, dedup=0))
    notifier.notify(body="disk full", notify_type=apprise.NotifyType.FAILURE)
    assert sslsms_gateway.emulator.messages()[0].text.startswith("[ERROR] ")


def test_url_privacy_round_trip_and_len(sslsms_gateway) -> None:
    url = url_for(sslsms_gateway, "01711111111", "01811111111", dedup=60, cap=5)
    obj = apprise.Apprise.instantiate(url)
    assert isinstance(obj, plugin.NotifySSLSMS)
    private = obj.url(privacy=True)
    assert sslsms_gateway.api_token not in private and "****" in private
    again = apprise.Apprise.instantiate(obj.url())
    assert again.url() == obj.url() and again.settings == obj.settings
    assert len(obj) == 1
    assert (
        len(apprise.Apprise.instantiate(url_for(sslsms_gateway, *[f"0171{n:07d}" for n in range(250)]))) == 3
    )


def test_partial_failure_is_reported(sslsms_gateway) -> None:
    sslsms_gateway.emulator.config.blocked_msisdns.add("8801811111111")
    notifier = apprise.Apprise()
    notifier.add(url_for(sslsms_gateway, "01711111111", "01811111111"))
    assert not notifier.notify(body="one of two blocked")
    assert [m.msisdn for m in sslsms_gateway.emulator.messages()] == ["8801711111111"]


def test_invalid_number_is_dropped_and_reported(sslsms_gateway) -> None:
    obj = apprise.Apprise.instantiate(url_for(sslsms_gateway, "01711111111", "0123"))
    assert obj.targets == ["8801711111111"] and obj.invalid_targets == ["0123"]
    assert obj.notify(body="x") is False  # delivered to the valid one, but not to every target
    assert len(sslsms_gateway.emulator.messages()) == 1


def test_bad_pipeline_option_is_rejected() -> None:
    assert apprise.Apprise.instantiate("sslsms://SID:tok-1234@01711111111?dedup=soon") is None


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "APPRISE_PLUGIN_DIR": str(tmp_path / "plugins"),
    }


def test_real_apprise_cli_with_installed_loader(sslsms_gateway, cli_env, tmp_path) -> None:
    install = subprocess.run(
        [BIN / "sslsms-notify", "apprise", "install"], env=cli_env, capture_output=True, text=True, check=True
    )
    loader = tmp_path / ".config" / "apprise" / "plugins" / "sslsms.py"
    assert str(loader) in install.stdout and loader.exists()
    result = subprocess.run(
        [BIN / "apprise", "-vv", "-b", "from the apprise CLI", url_for(sslsms_gateway)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert [m.text.split(": ", 1)[1] for m in sslsms_gateway.emulator.messages()] == ["from the apprise CLI"]
    assert sslsms_gateway.api_token not in result.stdout + result.stderr


def test_apprise_cli_example_with_config_files(sslsms_gateway, cli_env) -> None:
    env = {**cli_env, "SSLSMS_URL": url_for(sslsms_gateway, dedup=0)}
    result = subprocess.run(
        ["bash", str(ROOT / "examples" / "apprise_cli.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    bodies = [m.text.split(": ", 1)[1] for m in sslsms_gateway.emulator.messages()]
    assert bodies == [
        "deploy\nrelease 2026.11.25 rolled back",
        "db1 replication broken",
        "cache cluster degraded",
    ]
