"""Cost of ``logger.error(...)`` on the application's thread with SMSHandler attached.

Against, in the same run: the stdlib ``QueueHandler(SimpleQueue())`` (the usual
way to keep logging off the network) and ``NullHandler`` (the floor: record
creation alone). "First of kind" logs a new message each time; "duplicate"
logs the same one, which the pipeline suppresses.
"""

from __future__ import annotations

import itertools
import logging
import logging.handlers
import queue

from sslsms_notify import GatewayClient, Notifier, SMSHandler
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorTransport

from ._util import header, per_call_ns, row

CALLS = 50_000


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"bench.{id(handler)}")
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    return log


def main() -> dict[str, float]:
    notifier = Notifier(
        GatewayClient(DEMO_API_TOKEN, DEMO_SID, transport=EmulatorTransport()),
        recipients=["01711111111"],
        queue_size=10**7,
        start=False,
        close_at_exit=None,
    )
    sms = _logger(SMSHandler(notifier=notifier))
    queued = _logger(logging.handlers.QueueHandler(queue.SimpleQueue()))
    null = _logger(logging.NullHandler())
    counter = itertools.count()

    def first(log: logging.Logger):
        # a new message string each call: nothing to coalesce, every record is queued
        return lambda: log.error(f"order {next(counter)} failed: card declined")

    def duplicate(log: logging.Logger):
        return lambda: log.error("payment gateway timeout")

    results = {}
    header(f"logger.error() on the caller's thread ({CALLS:,} calls, best of 5)")
    for kind, make in (("first of kind", first), ("duplicate", duplicate)):
        ours = per_call_ns(make(sms), CALLS)
        stdlib = per_call_ns(make(queued), CALLS)
        floor = per_call_ns(make(null), CALLS)
        row(
            f"{kind}: SMSHandler vs QueueHandler",
            f"{ours:,.0f} ns",
            f"{stdlib:,.0f} ns",
            f"{ours / stdlib:.2f}x",
        )
        row(
            f"{kind}: SMSHandler vs NullHandler",
            f"{ours:,.0f} ns",
            f"{floor:,.0f} ns",
            f"{ours / floor:.2f}x",
        )
        results[f"{kind}_ours_ns"], results[f"{kind}_queue_ns"], results[f"{kind}_null_ns"] = (
            ours,
            stdlib,
            floor,
        )
    notifier.close(0)  # the point here is the caller's cost, not delivery
    return results


if __name__ == "__main__":
    main()
