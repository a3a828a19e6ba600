"""Page the on-call phone from plain logging, configured with dictConfig.

Run against the emulator:
    sslsms-notify emulator --port 8025 &
    SSLSMS_URL="sslsms://EMULATOR:emulator-token-0123456789@01712345678?base_url=http://127.0.0.1:8025" \
        python examples/logging_dictconfig.py
"""

import logging
import logging.config

LOGGING = {
    "version": 1,
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "sms": {
            "class": "sslsms_notify.SMSHandler",
            "level": "ERROR",
            # no "url": SSLSMS_URL, then the config file (or "url": "sslsms://...")
            "dedup_window": 300,
            "close_timeout": 10,
        },
    },
    "root": {"level": "INFO", "handlers": ["console", "sms"]},
}

logging.config.dictConfig(LOGGING)
log = logging.getLogger("shop.checkout")
log.info("checkout service started")  # console only
for attempt in range(20):
    log.error("payment gateway timeout after %d ms", 3000 + attempt)  # one SMS, then a summary
try:
    basket_total = sum([]) / len([])  # an empty basket
except ZeroDivisionError:
    log.exception("cannot compute the basket total")
logging.shutdown()  # flushes: the SMS are delivered before the process exits
