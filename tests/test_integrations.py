"""The logging and structlog doors, against the emulator server."""

from __future__ import annotations

import logging
import logging.config
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import structlog

from sslsms_notify import SMSHandler
from sslsms_notify.config import Settings
from sslsms_notify.integrations.structlog import SMSProcessor

ROOT = Path(__file__).resolve().parent.parent


def url_for(gateway, *numbers: str, **args: object) -> str:
    query = "&".join([f"base_url={gateway.url}", *(f"{k}={v}" for k, v in args.items())])
    return f"sslsms://{gateway.sid}:{gateway.api_token}@{'/'.join(numbers or ('01711111111',))}?{query}"


def texts(gateway) -> list[str]:
    return [m.text for m in gateway.emulator.messages()]


@pytest.fixture
def logger():
    log = logging.getLogger("tests.app")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def test_dictconfig_handler_pages_once_with_summary(sslsms_gateway, logger) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "incremental": False,
            "disable_existing_loggers": False,
            "handlers": {
                "sms": {
                    "class": "sslsms_notify.SMSHandler",
                    "level": "ERROR",
                    "url": url_for(sslsms_gateway),
                    "close_timeout": 5,
                }
            },
            "loggers": {"tests.app": {"handlers": ["sms"], "level": "DEBUG", "propagate": False}},
        }
    )
    for i in range(10):
        logger.error("queue depth %d over limit", 100 + i)
    logger.warning("below the handler level")
    logger.handlers[0].close()
    sent = texts(sslsms_gateway)
    assert sent[0].endswith("tests.app: queue depth 100 over limit")
    assert sent[1].startswith("[ERROR +9 more since ") and len(sent) == 2


def test_exception_type_and_last_frame_not_whole_traceback(sslsms_gateway, logger) -> None:
    handler = SMSHandler(url_for(sslsms_gateway))
    logger.addHandler(handler)

    def parse_order() -> None:
        raise KeyError("order_id")

    try:
        parse_order()
    except KeyError:
        logger.exception("cannot read order")
    handler.close()
    [text] = texts(sslsms_gateway)
    assert "cannot read order (KeyError: 'order_id' at test_integrations.py:" in text
    assert "in parse_order)" in text and "Traceback" not in text


def test_level_and_logger_routing(sslsms_gateway, logger) -> None:
    handler = SMSHandler(
        url_for(sslsms_gateway),
        groups={"managers": ["01911111111"], "dbas": ["01811111111"]},
        level_groups={"ERROR": ["default"], "CRITICAL": ["default", "managers"]},
        logger_groups={"tests.app.db": ["dbas"]},
    )
    logger.addHandler(handler)
    logger.error("plain error")
    logger.critical("site down")
    logging.getLogger("tests.app.db").error("replica lag")
    handler.close()
    by_number: dict[str, list[str]] = {}
    for m in sslsms_gateway.emulator.messages():
        by_number.setdefault(m.msisdn, []).append(m.text.split(": ", 1)[1])
    assert sorted(by_number["8801711111111"]) == ["plain error", "replica lag", "site down"]
    assert by_number["8801911111111"] == ["site down"]
    assert by_number["8801811111111"] == ["replica lag"]


def test_env_url_and_no_recursion(sslsms_gateway, monkeypatch) -> None:
    monkeypatch.setenv("SSLSMS_URL", url_for(sslsms_gateway))
    handler = SMSHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        sslsms_gateway.emulator.faults.api_code(5000, count=1)  # makes our client log a retry warning
        logging.getLogger("envtest.x").error("real problem")
        logging.getLogger("httpx").error("httpx noise")
        logging.getLogger("sslsms_notify.gateway").error("our own noise")
        handler.flush()
    finally:
        root.removeHandler(handler)
        handler.close()
    assert [t.split(": ", 1)[1] for t in texts(sslsms_gateway)] == ["real problem"], handler.notifier.stats()


def test_emit_never_raises(sslsms_gateway, logger) -> None:
    handler = SMSHandler(url_for(sslsms_gateway), queue_size=1, start=False)
    logger.addHandler(handler)

    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    logging.raiseExceptions = True
    record = logger.makeRecord("tests.app", logging.ERROR, __file__, 1, "bad arg %s", (Broken(),), None)
    handler.handle(record)  # rendered on the worker: nothing raised here
    for i in range(5):  # distinct messages: each needs a place in the (full) queue
        handler.handle(logger.makeRecord("tests.app", logging.ERROR, __file__, 1, f"more {i}", (), None))
    stats = handler.notifier.stats()
    assert stats["dropped"] == 5
    handler.notifier.tick()
    assert "could not be formatted" in texts(sslsms_gateway)[0]
    handler.close()


def test_exact_repeats_are_coalesced_and_counted(sslsms_gateway, logger) -> None:
    handler = SMSHandler(url_for(sslsms_gateway))
    logger.addHandler(handler)
    for _ in range(500):
        logger.error("queue %s over its limit", "payments")  # the same call, the same arguments
    for ms in range(3000, 3100):
        logger.error("checkout took %d ms", ms)  # a measurement: one alert, through the queue
    handler.flush()
    stats = handler.notifier.stats()
    assert stats["received"] == 600 and stats["suppressed"] == 499 + 99
    assert stats["coalesced"] >= 400  # most exact repeats never reached the queue
    handler.close()
    sent = sorted(texts(sslsms_gateway))
    assert len(sent) == 4
    assert [t.split(" more since")[0] for t in sent if "more since" in t] == ["[ERROR +499", "[ERROR +99"]


def test_log_arguments_that_name_something_keep_alerts_apart(sslsms_gateway, logger) -> None:
    """%-style arguments are part of the identity: web2 going down is not a repeat of web1."""
    handler = SMSHandler(url_for(sslsms_gateway))
    logger.addHandler(handler)
    logger.error("host %s is down", "web1")
    logger.error("host %s is down", "web2")
    logger.error("host %s is down", "web1")  # a repeat of the first
    handler.close()
    firsts = sorted(t for t in texts(sslsms_gateway) if "more since" not in t)
    assert [t.rsplit(": ", 1)[1] for t in firsts] == ["host web1 is down", "host web2 is down"]


def test_fstring_messages_still_dedup(sslsms_gateway, logger) -> None:
    handler = SMSHandler(url_for(sslsms_gateway))
    logger.addHandler(handler)
    for order in range(20):
        logger.error(f"order {order} failed: card declined")  # what users often write
    handler.close()
    sent = texts(sslsms_gateway)
    assert len(sent) == 2 and sent[1].startswith("[ERROR +19 more since ")


def test_handler_from_keyword_arguments(sslsms_gateway, logger) -> None:
    handler = SMSHandler(
        api_token=sslsms_gateway.api_token,
        sid=sslsms_gateway.sid,
        base_url=sslsms_gateway.url,
        recipients=["017-1111-1111", "01811111111"],
        dedup_window=0,
    )
    logger.addHandler(handler)
    logger.error("configured by keywords")
    handler.close()
    assert sorted(m.msisdn for m in sslsms_gateway.emulator.messages()) == ["8801711111111", "8801811111111"]
    with pytest.raises(ValueError, match=r"recipients\[0\] '12'"):
        SMSHandler(api_token="tok-1234", sid="SID", recipients=["12"])


def test_handler_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="URL argument 'dedupe' is unknown"):
        SMSHandler("sslsms://SID:tok-1234@01711111111?dedupe=5")
    with pytest.raises(ValueError, match="URL recipient '0123'"):
        SMSHandler("sslsms://SID:tok-1234@0123")
    with pytest.raises(ValueError, match="level 'LOUD'"):
        SMSHandler("sslsms://SID:tok-1234@01711111111", level="LOUD")


def test_secret_is_masked_in_reprs_and_privacy_url() -> None:
    settings = Settings.from_url("sslsms://SID:tok-secret-99@01711111111?dedup=60")
    handler = SMSHandler(settings.url(), start=False)
    for text in (
        repr(settings),
        settings.masked_url(),
        repr(handler),
        repr(handler.notifier),
        str(settings.describe()),
    ):
        assert "tok-secret-99" not in text
    assert Settings.from_url(settings.url()) == settings
    handler.close()


EXIT_SCRIPT = textwrap.dedent(
    """
    import logging, sys, threading
    from sslsms_notify import SMSHandler
    logging.getLogger().addHandler(SMSHandler(sys.argv[1]))
    def worker():
        logging.getLogger("job").error("job failed in a thread")
        sys.exit(3)  # ends the thread only; the process exits when main returns
    t = threading.Thread(target=worker); t.start(); t.join()
    logging.getLogger("main").critical("main exiting")
    logging.getLogger("main").critical("main exiting")  # a repeat held by the handler at exit
    sys.exit(1)
    """
)


def test_flushes_at_interpreter_exit(sslsms_gateway) -> None:
    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, url_for(sslsms_gateway)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    sent = texts(sslsms_gateway)
    firsts = sorted(t.split(": ", 1)[1] for t in sent if "more since" not in t)
    assert firsts == ["job failed in a thread", "main exiting"]
    # the repeat counted just before exit was not lost
    assert any(t.startswith("[CRIT +1 more since ") for t in sent), sent


def test_file_config(sslsms_gateway, tmp_path) -> None:
    ini = tmp_path / "logging.ini"
    ini.write_text(
        textwrap.dedent(f"""
        [loggers]
        keys=root
        [handlers]
        keys=sms
        [formatters]
        keys=
        [logger_root]
        level=INFO
        handlers=sms
        [handler_sms]
        class=sslsms_notify.SMSHandler
        level=ERROR
        args=('{url_for(sslsms_gateway)}',)
        """)
    )
    script = (
        f"import logging.config; logging.config.fileConfig({str(ini)!r}); "
        "logging.getLogger('x').error('from fileConfig'); logging.shutdown()"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert [t.split(": ", 1)[1] for t in texts(sslsms_gateway)] == ["from fileConfig"]


# -- structlog -----------------------------------------------------------------------
def test_structlog_processor_passes_event_on_unchanged(sslsms_gateway) -> None:
    sms = SMSProcessor(url=url_for(sslsms_gateway), level="error")
    seen: list[dict] = []

    def capture(_logger, _name, event_dict):
        seen.append(dict(event_dict))
        raise structlog.DropEvent

    log = structlog.wrap_logger(
        structlog.PrintLogger(), processors=[structlog.processors.add_log_level, sms, capture]
    )
    log.info("just info", user=1)
    log.error("payment failed", order=42, amount="10.00")
    sms.notifier.close(5)
    assert [e["event"] for e in seen] == ["just info", "payment failed"]
    assert seen[1] == {"event": "payment failed", "order": 42, "amount": "10.00", "level": "error"}
    [text] = texts(sslsms_gateway)
    assert text.endswith("payment failed order=42 amount=10.00")


def test_structlog_with_stdlib_integration(sslsms_gateway) -> None:
    sms = SMSProcessor(url=url_for(sslsms_gateway), level="warning", when=lambda e: e.get("page", True))
    log = structlog.wrap_logger(
        logging.getLogger("tests.structlog"),
        processors=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            sms,
            structlog.processors.KeyValueRenderer(),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    logging.getLogger("tests.structlog").setLevel(logging.DEBUG)
    log.warning("disk filling", pct=91)
    log.error("ignored by filter", page=False)
    sms.notifier.close(5)
    [text] = texts(sslsms_gateway)
    assert text.startswith("[WARN] ") and "tests.structlog: disk filling pct=91" in text


# -- examples ---------------------------------------------------------------------
@pytest.mark.parametrize("example", ["logging_dictconfig.py", "structlog_example.py"])
def test_examples_run_against_the_emulator(sslsms_gateway, example) -> None:
    env = {**os.environ, "SSLSMS_URL": url_for(sslsms_gateway)}
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / example)],
        check=True,
        env=env,
        timeout=60,
        capture_output=True,
    )
    assert texts(sslsms_gateway)


def test_structlog_exception_carries_the_exception(sslsms_gateway) -> None:
    """log.exception() sets exc_info=True; the processor fetches the exception on the caller's thread."""
    sms = SMSProcessor(url=url_for(sslsms_gateway), level="error")
    log = structlog.wrap_logger(
        structlog.PrintLogger(),
        processors=[
            structlog.processors.add_log_level,
            sms,
            lambda *_: (_ for _ in ()).throw(structlog.DropEvent),
        ],
    )
    try:
        {}["order_id"]
    except KeyError:
        log.exception("cannot read order")
    sms.notifier.close(5)
    [text] = texts(sslsms_gateway)
    assert text.endswith("cannot read order (KeyError: 'order_id')")


def test_first_sms_shows_the_first_occurrence_and_the_summary_the_last(sslsms_gateway, logger) -> None:
    """An alert and its repeats taken in the same round: the SMS is the first one's text."""
    handler = SMSHandler(url_for(sslsms_gateway), start=False)
    logger.addHandler(handler)
    logger.error("disk %d%% full on %s", 91, "/var")
    logger.error("disk %d%% full on %s", 95, "/var")  # counted as a repeat of the same template
    logger.error("disk %d%% full on %s", 97, "/var")
    handler.close()
    first, summary = texts(sslsms_gateway)
    assert first.endswith("tests.app: disk 91% full on /var")
    assert summary.startswith("[ERROR +2 more since ") and "disk 97% full on /var" in summary


def test_a_handler_that_cannot_open_its_store_raises_once_and_exit_stays_quiet(tmp_path) -> None:
    """The error names the store; logging.shutdown() then finds no half-made handler."""
    import subprocess
    import sys

    script = (
        "import logging\n"
        "from sslsms_notify import SMSHandler\n"
        "try:\n"
        "    SMSHandler('sslsms://S:T0123456789@01712345678?store=sqlite:////proc/nope/x.db')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("StoreUnavailableError store sqlite:////proc/nope")
    assert done.stderr == ""  # no AttributeError from logging.shutdown at exit


@pytest.mark.parametrize("other_handler", [False, True])
def test_a_lost_sms_is_said_on_stderr_when_no_other_handler_would_show_it(other_handler) -> None:
    """SMSHandler never pages our own log lines: with it the only handler, a loss would be silent."""
    import subprocess
    import sys

    from .conftest import free_port

    script = (
        "import logging, sys\n"
        "from sslsms_notify import SMSHandler\n"
        f"url = 'sslsms://S:T0123456789@01712345678?base_url=http://127.0.0.1:{free_port()}&timeout=1'\n"
        "h = SMSHandler(url, close_timeout=2)\n"
        "logging.getLogger().addHandler(h)\n"
        + ("logging.getLogger().addHandler(logging.StreamHandler(sys.stdout))\n" if other_handler else "")
        + "logging.getLogger('app').error('disk full')\n"
        "h.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    said = "sslsms-notify: closed with 1 SMS undelivered, lost with the memory store"
    if other_handler:  # the application's own handler shows our log line: nothing more to say
        assert said not in done.stderr and "a memory store loses them" in done.stdout
    else:
        assert done.stderr.count(said) == 1, done.stderr


def test_close_at_exit_is_refused_naming_close_timeout() -> None:
    with pytest.raises(TypeError, match="pass close_timeout instead"):
        SMSHandler(api_token="t" * 20, sid="SID", recipients=["01711111111"], close_at_exit=3)
