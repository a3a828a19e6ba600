"""Run every benchmark: ``python -m benchmarks`` (or name some: ``python -m benchmarks outbox``)."""

from __future__ import annotations

import importlib
import platform
import sys

ALL = [
    "logging_handler",
    "storm",
    "worker",
    "scaling",
    "intake_latency",
    "busy_timers",
    "shutdown",
    "outbox",
    "pipeline",
    "emulator_server",
    "relay",
]


def main() -> None:
    names = sys.argv[1:] or ALL
    unknown = set(names) - set(ALL)
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    print(f"sslsms-notify benchmarks on Python {platform.python_version()}, {platform.machine()}")
    for name in names:
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main()
