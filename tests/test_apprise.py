"""The apprise plugin: Apprise().notify(), and the real apprise CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import apprise
import pytest

import sslsms_notify.integrations.apprise as plugin
from sslsms_notify.config import account_id, default_state_url

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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("cap_period=0", "cap_period='0': must be a number of seconds greater than 0"),
        ("tps=nan", "tps='nan': must be a number greater than 0"),
        ("segments=0", "segments='0': must be a whole number from 1 to 15"),
        ("timeout=0", "timeout='0'"),
        ("store=foo://bar", "store='foo://bar'"),
        ("store=redis://:RedisPw9@127.0.0.1:x/0", "store='redis://:****@127.0.0.1:x/0'"),
    ],
)
def test_invalid_option_rejects_the_url_with_field_and_rule(caplog, args: str, message: str) -> None:
    """Not "Sent ... to 0 phone(s)" later: apprise refuses the URL, and says why."""
    with caplog.at_level("WARNING"):
        assert apprise.Apprise.instantiate(f"sslsms://SID:tok-1234@01711111111?{args}") is None
    assert message in caplog.text
    assert "tok-1234" not in caplog.text and "RedisPw9" not in caplog.text


def test_privacy_url_masks_a_store_password(sslsms_gateway) -> None:
    obj = apprise.Apprise.instantiate(url_for(sslsms_gateway, store="redis://:RedisPw9@127.0.0.1:6379/0"))
    assert obj is not None
    private = obj.url(privacy=True)
    assert "RedisPw9" not in private and sslsms_gateway.api_token not in private
    again = apprise.Apprise.instantiate(obj.url())  # the full URL still round-trips
    assert again.settings == obj.settings and again.settings.store == "redis://:RedisPw9@127.0.0.1:6379/0"
    # apprise's own store=yes/no (its persistent storage) is not taken for a store URL
    flag = apprise.Apprise.instantiate(url_for(sslsms_gateway, store="no"))
    assert flag is not None and flag.settings.store == "memory"


def test_notify_waits_for_its_own_sms_only(sslsms_gateway, tmp_path) -> None:
    """An SMS another process left in flight in the shared store is not this notification's."""
    from sslsms_notify.stores.base import OutboxItem
    from sslsms_notify.stores.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "shared.db")
    now = time.time()
    store.outbox_add([OutboxItem("leftover0000000000002", "8801811111111", "left behind", now, now)])
    assert store.outbox_claim(10, 120)
    store.close()
    notifier = apprise.Apprise()
    notifier.add(url_for(sslsms_gateway, store=f"sqlite:///{tmp_path}/shared.db"))
    started = time.monotonic()
    assert notifier.notify(body="mine")
    assert time.monotonic() - started < 10
    assert [m.msisdn for m in sslsms_gateway.emulator.messages()] == ["8801711111111"]


def test_in_process_default_stays_memory(sslsms_gateway) -> None:
    obj = apprise.Apprise.instantiate(url_for(sslsms_gateway))
    assert obj.settings.store == "memory" and not plugin.run_from_apprise_cli()


def test_apprise_cli_default_state_is_per_account(sslsms_gateway, tmp_path, monkeypatch) -> None:
    """From the apprise CLI, each gateway account (SID and base URL) gets its own file:
    an SMS one account left is never sent through another."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(sys, "argv", ["/usr/bin/apprise", "-b", "x"])
    token = sslsms_gateway.api_token
    here = apprise.Apprise.instantiate(url_for(sslsms_gateway))
    there = apprise.Apprise.instantiate(f"sslsms://STAGING:{token}@01711111111?base_url=http://127.0.0.1:1")
    assert here.settings.store == default_state_url("EMULATOR", sslsms_gateway.url)
    assert there.settings.store == default_state_url("STAGING", "http://127.0.0.1:1")
    assert here.settings.store != there.settings.store
    explicit = apprise.Apprise.instantiate(url_for(sslsms_gateway, store=f"sqlite:///{tmp_path}/mine.db"))
    assert explicit.settings.store == f"sqlite:///{tmp_path}/mine.db"  # store= is the operator's choice


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "SSLSMS_URL": "",
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


def test_apprise_cli_keeps_state_across_invocations(sslsms_gateway, cli_env, tmp_path) -> None:
    """Each `apprise` run is a new process: without store= the plugin uses the same SQLite
    file as `sslsms-notify send`, so a repeat is suppressed across runs and commands."""
    subprocess.run(
        [BIN / "sslsms-notify", "apprise", "install"], env=cli_env, check=True, capture_output=True
    )
    url = url_for(sslsms_gateway)

    def page(body: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BIN / "apprise", "-vv", "-b", body, url],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    first, second = page("db1 disk 91% full"), page("db1 disk 95% full")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "a repeat inside the dedup window" in second.stdout + second.stderr
    assert len(sslsms_gateway.emulator.messages()) == 1
    # the account's own file (SID and base URL), never one file for every account
    state = tmp_path / "state" / "sslsms-notify"
    account = account_id(sslsms_gateway.sid, sslsms_gateway.url)
    assert sorted(state.glob("state*.db")) == [state / f"state-{account}.db"]
    # ... and `sslsms-notify send` shares that state: the same alert is a repeat there too
    send = subprocess.run(
        [
            BIN / "sslsms-notify",
            "send",
            "--url",
            url,
            "--severity",
            "info",
            "--source",
            "apprise",
            "db1 disk 99% full",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert send.returncode == 3, send.stdout + send.stderr
    assert len(sslsms_gateway.emulator.messages()) == 1


def test_apprise_cli_refuses_a_bad_option(sslsms_gateway, cli_env) -> None:
    subprocess.run(
        [BIN / "sslsms-notify", "apprise", "install"], env=cli_env, check=True, capture_output=True
    )
    result = subprocess.run(
        [BIN / "apprise", "-vv", "-b", "x", url_for(sslsms_gateway, cap_period=0)],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "cap_period='0': must be a number of seconds greater than 0" in result.stdout + result.stderr
    assert "Sent" not in result.stdout + result.stderr
    assert sslsms_gateway.emulator.messages() == []


def test_an_unknown_url_argument_is_refused_naming_it(caplog) -> None:
    """The configuration page says unknown arguments are refused: apprise URLs too."""
    import apprise

    a = apprise.Apprise()
    with caplog.at_level("WARNING"):
        assert not a.add("sslsms://SID:TOKEN@01712345678?dedupe=300")
    assert "URL argument 'dedupe' is unknown" in caplog.text
    # ours, and apprise's own (format, overflow, store=no), are taken
    assert a.add("sslsms://SID:TOKEN@01712345678?dedup=300&format=text&overflow=split&store=no")


def test_every_apprise_object_of_one_url_shares_one_pipeline(sslsms_gateway) -> None:
    """apprise builds a plugin object per Apprise().add(); an app may build one per
    notification. One pipeline per URL: two threads, not two per notification, and the
    dedup window of the first notification holds for the next."""
    url = url_for(sslsms_gateway, "01711111111")

    def pipeline_threads() -> int:
        return sum(t.name.startswith("sslsms-") for t in threading.enumerate())

    before = pipeline_threads()
    try:
        results = []
        for _ in range(10):
            a = apprise.Apprise()
            a.add(url)
            results.append(bool(a.notify("disk full on db1")))
        assert results == [True] * 10  # a repeat in the dedup window counts as accepted
        assert pipeline_threads() - before == 2  # intake and dispatch, once
        [sms] = sslsms_gateway.emulator.messages()
        assert sms.text.startswith("[INFO] ") and sms.text.endswith("apprise: disk full on db1")
    finally:
        assert plugin.close_pipelines(5)
    a = apprise.Apprise()  # closed: the next notification starts a new pipeline
    a.add(url)
    assert bool(a.notify("after close"))
    texts = [m.text for m in sslsms_gateway.emulator.messages()]
    # closing a memory pipeline summarised the nine repeats its window held
    assert len(texts) == 3 and texts[1].startswith("[INFO +9 more since ")
    assert texts[2].endswith("apprise: after close")
