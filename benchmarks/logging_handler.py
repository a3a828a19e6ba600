"""What ``logger.error()`` costs the application's thread with SMSHandler attached.

SMSHandler runs as users run it: default settings, its worker threads on, the
gateway emulator in its own process. Against, in the same run and interleaved
round by round:

- **QueueHandler + QueueListener**, the listener's handler formatting each record
  (``logging.Formatter``) into an in-memory stream: what a user would build
  instead to keep logging off the network. The target: first-of-kind at most
  1.0x its mean, p99 at most 1.5x its p99.
- **NullHandler**: record creation alone, the floor. An exact repeat: at most 1.2x.
- **QueueHandler alone** (no consumer), for reference.

"First of kind" logs a distinct template each call (different words, not
different numbers, so the pipeline really sees a new alert each time).
Between rounds every consumer drains its backlog, untimed.
"""

from __future__ import annotations

import io
import itertools
import logging
import logging.handlers
import queue
import string
import time
from collections.abc import Callable

from sslsms_notify import SMSHandler
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID

from ._util import ROUNDS, Samples, emulator_process, header, interleaved, ns, row, timed_calls

CALLS = 20_000
_counter = itertools.count()


def _words() -> Callable[[], str]:
    letters = string.ascii_lowercase
    pool = ("".join(p) for p in itertools.product(letters, repeat=4))

    def next_template() -> str:
        return f"checkout failed in step {next(pool)}, order rejected"

    return next_template


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"bench.app.{next(_counter)}")
    log.propagate = False
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    return log


def main() -> dict[str, float]:
    next_template = _words()
    with emulator_process() as url:
        sms_handler = SMSHandler(
            api_token=DEMO_API_TOKEN, sid=DEMO_SID, recipients=["01711111111"], base_url=url
        )
        stream_handler = logging.StreamHandler(io.StringIO())
        stream_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        listener_queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(listener_queue, stream_handler)
        listener.start()
        lonely_queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        loggers = {
            "SMSHandler": _logger(sms_handler),
            "QueueHandler + QueueListener": _logger(logging.handlers.QueueHandler(listener_queue)),
            "QueueHandler alone": _logger(logging.handlers.QueueHandler(lonely_queue)),
            "NullHandler": _logger(logging.NullHandler()),
        }

        def drain() -> None:
            sms_handler.notifier.sync(30)
            while not listener_queue.empty():
                time.sleep(0.005)
            while not lonely_queue.empty():
                lonely_queue.get_nowait()

        def first_of_kind(log: logging.Logger) -> Callable[[], tuple[float, list[int]]]:
            def run() -> tuple[float, list[int]]:
                templates = [next_template() for _ in range(CALLS)]
                result = timed_calls(lambda i: log.error(templates[i]), CALLS)
                drain()
                return result

            return run

        def repeat(log: logging.Logger) -> Callable[[], tuple[float, list[int]]]:
            def run() -> tuple[float, list[int]]:
                result = timed_calls(lambda i: log.error("payment gateway timeout"), CALLS)
                drain()
                return result

            return run

        results: dict[str, float] = {}
        for kind, make in (("first of kind", first_of_kind), ("exact repeat", repeat)):
            samples = interleaved({name: make(log) for name, log in loggers.items()})
            _report(kind, samples)
            for name, s in samples.items():
                results[f"{kind}/{name}/mean_ns"] = s.median
                results[f"{kind}/{name}/p99_ns"] = s.pct(99)
        stats = sms_handler.notifier.stats()
        print(
            f"  (SMSHandler pipeline meanwhile: received {stats['received']:,}, dropped {stats['dropped']}, "
            f"suppressed {stats['suppressed']:,}, throttled into digests {stats['throttled']:,})"
        )
        listener.stop()
        sms_handler.close()
    return results


def _report(kind: str, samples: dict[str, Samples]) -> None:
    header(
        f"logger.error(), {kind}: {CALLS:,} calls x {ROUNDS} rounds, interleaved (per call)",
        ("mean min", "mean median", "p50", "p99", "max"),
    )
    for name, s in samples.items():
        row(name, ns(s.min), ns(s.median), ns(s.pct(50)), ns(s.pct(99)), ns(max(s.latencies_ns)))
    ours = samples["SMSHandler"]
    listener = samples["QueueHandler + QueueListener"]
    null = samples["NullHandler"]
    if kind == "first of kind":
        row(
            "SMSHandler / QueueHandler+Listener (target <= 1.0)",
            f"{ours.min / listener.min:.2f}x",
            f"{ours.median / listener.median:.2f}x",
            f"{ours.pct(50) / listener.pct(50):.2f}x",
            f"{ours.pct(99) / listener.pct(99):.2f}x (<=1.5)",
            "",
        )
    else:
        row(
            "SMSHandler / NullHandler (target <= 1.2)",
            f"{ours.min / null.min:.2f}x",
            f"{ours.median / null.median:.2f}x",
            f"{ours.pct(50) / null.pct(50):.2f}x",
            f"{ours.pct(99) / null.pct(99):.2f}x",
            "",
        )


if __name__ == "__main__":
    main()
