"""Page from structlog: the processor forwards errors and passes every event on unchanged.

    SSLSMS_URL="sslsms://EMULATOR:emulator-token-0123456789@01712345678?base_url=http://127.0.0.1:8025" \
        python examples/structlog_example.py
"""

import structlog

from sslsms_notify.integrations.structlog import SMSProcessor

sms = SMSProcessor(level="error")  # reads SSLSMS_URL
structlog.configure(
    processors=[
        structlog.processors.add_log_level,  # before SMSProcessor: it reads "level"
        structlog.processors.TimeStamper(fmt="iso"),
        sms,  # before the renderer: it needs the event dict, not a string
        structlog.processors.KeyValueRenderer(key_order=["event"]),
    ]
)
log = structlog.get_logger("billing")
log.info("invoice run started", invoices=1200)
log.error("invoice run failed", invoices=1200, reason="ledger locked")
sms.notifier.close(10)
