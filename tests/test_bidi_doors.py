"""Bidirectional controls never reach a phone, whichever door an alert comes in by.

A right-to-left override (U+202E) re-orders what the phone shows, so an alert could read
as the opposite of what it holds. Every door hands its text to the Notifier, whose
``_render`` applies ``gateway.clean.clean_text``; each test here goes through one door,
the real one, to the emulator over HTTP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import apprise
import pytest
import structlog

import sslsms_notify.integrations.apprise  # noqa: F401  (registers sslsms://)
from sslsms_notify import SMSHandler
from sslsms_notify.integrations.structlog import SMSProcessor

from .test_cli import run
from .test_relay import PHONE, http, make_relay, texts, wait_for

# "disk LLUF on web1" once the controls are gone; with them a phone shows words reversed
RAW = "disk \u202eLLUF\u202c on \u2067web1\u2069\u200f"
CLEAN = "disk LLUF on web1"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def url_for(gateway) -> str:
    return f"sslsms://{gateway.sid}:{gateway.api_token}@01711111111?base_url={gateway.url}"


def only_text(gateway) -> str:
    [message] = gateway.emulator.messages()
    assert not any(ch in message.text for ch in BIDI)
    return message.text


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.bidi")
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def test_logging_handler(sslsms_gateway, logger) -> None:
    handler = SMSHandler(url_for(sslsms_gateway))
    logger.addHandler(handler)
    logger.error(RAW)
    handler.close()
    assert only_text(sslsms_gateway).endswith(f"tests.bidi: {CLEAN}")


def test_structlog_processor(sslsms_gateway) -> None:
    sms = SMSProcessor(url=url_for(sslsms_gateway), level="error")
    log = structlog.wrap_logger(
        structlog.PrintLogger(),
        processors=[
            structlog.processors.add_log_level,
            sms,
            lambda *_: (_ for _ in ()).throw(structlog.DropEvent),
        ],
    )
    log.error(RAW)
    sms.notifier.close(5)
    assert only_text(sslsms_gateway).endswith(CLEAN)


def test_apprise_plugin(sslsms_gateway) -> None:
    notifier = apprise.Apprise()
    assert notifier.add(url_for(sslsms_gateway))
    assert notifier.notify(body=RAW, title="\u202eWARN\u202c")
    assert only_text(sslsms_gateway).endswith(f"WARN\n{CLEAN}")


def test_cli_send(sslsms_gateway, tmp_path) -> None:
    env = {
        "SSLSMS_URL": f"{url_for(sslsms_gateway)}&store=sqlite:///{tmp_path}/cli.db",
        "HOME": str(tmp_path),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    result = run("send", "--json", RAW, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"] == "delivered"
    assert only_text(sslsms_gateway).endswith(CLEAN)


def test_relay_own_api(sslsms_gateway) -> None:
    relay = make_relay(sslsms_gateway)
    try:
        with http(relay) as client:
            assert client.post("/v1/alerts", json={"text": RAW}).status_code == 202
        assert wait_for(lambda: texts(sslsms_gateway, PHONE))
    finally:
        relay.stop(5)
    assert only_text(sslsms_gateway).endswith(CLEAN)


def test_the_origin_is_cleaned_like_the_text() -> None:
    """A source or host from the Python API is input too: no bidi or control characters."""
    from sslsms_notify.alerting.alert import Severity
    from sslsms_notify.alerting.formatting import format_parts

    text = format_parts(Severity.ERROR, "db\u202e1", "app\x1b[31m.jobs\n", "disk full", 2)
    assert text == "[ERROR] db1/app.jobs: disk full"
