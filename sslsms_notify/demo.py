"""``sslsms-notify demo``: a realistic incident through the real logging path, on the emulator."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .alerting.notifier import Notifier
from .emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport, GatewayEmulator
from .gateway.client import GatewayClient
from .integrations.logging import SMSHandler

ONCALL = ["01711000001", "01811000002"]
DBAS = ["01911000003", "01711000001"]  # the on-call engineer is also a DBA
MANAGERS = ["01511000004"]


def run_demo(echo: Callable[[str], None] = print) -> dict[str, int]:
    emulator = GatewayEmulator()
    client = GatewayClient(
        DEMO_API_TOKEN,
        DEMO_SID,
        base_url="http://emulator.local",
        transport=EmulatorTransport(emulator),
    )
    notifier = Notifier(
        client,
        groups={"oncall": ONCALL, "dbas": DBAS, "managers": MANAGERS},
        default_groups=["oncall"],
        routes=[{"groups": ["dbas"], "sources": ["shop.db"]}],
        dedup_window=300,
        host="web-1",
        close_at_exit=None,
    )
    handler = SMSHandler(notifier=notifier, level="ERROR", level_groups={"CRITICAL": ["oncall", "managers"]})
    log = logging.getLogger("shop")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)

    echo("Incident replay: checkout fails while the primary database fills up.\n")
    log.info("deploy 2026.11.25-3 started")  # below ERROR: no SMS
    for attempt in range(40):  # a storm of one error
        logging.getLogger("shop.checkout").error("payment gateway timeout after %d ms", 3000 + attempt)
    logging.getLogger("shop.db").error("disk %d%% full on %s", 91, "/var/lib/postgresql")
    logging.getLogger("shop.db").error("disk %d%% full on %s", 95, "/var/lib/postgresql")  # a repeat
    try:
        {"id": 7}["order_id"]
    except KeyError:
        logging.getLogger("shop.orders").exception("cannot read order")
    logging.getLogger("shop.db").critical("primary database down, failover started")
    logging.getLogger("shop.bn").error("পেমেন্ট সার্ভার সাড়া দিচ্ছে না")  # Bangla stays intact

    handler.close()
    notifier.close(10)
    log.removeHandler(handler)

    by_phone: dict[str, list[str]] = {}
    for message in emulator.messages():
        by_phone.setdefault(message.msisdn, []).append(
            f"[{message.sms_type} {message.segments} seg, {message.endpoint}] {message.text}"
        )
    for phone, texts in sorted(by_phone.items()):
        echo(f"+{phone} received {len(texts)} SMS:")
        for text in texts:
            echo(f"    {text}")
    stats = notifier.stats()
    echo(
        f"\n{stats['received']} log records -> {stats['sent']} SMS in {stats['requests']} "
        f"requests; {stats['suppressed']} repeats held back and summarised."
    )
    return stats
