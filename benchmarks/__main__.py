"""Run every benchmark: ``python -m benchmarks`` (or name some: ``python -m benchmarks outbox``)."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
from pathlib import Path

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


def _summary(name: str) -> str:
    """A benchmark's first docstring line, read without importing it (imports set up servers)."""
    import ast

    path = Path(__file__).with_name(f"{name}.py")
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the benchmarks, each against a baseline measured in the same run "
        "(interleaved round by round), and print min, median and latency percentiles.",
        epilog="benchmarks:\n" + "\n".join(f"  {n:<16} {_summary(n)}" for n in ALL),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument(
        "--rounds", type=int, metavar="N", help="rounds per benchmark (default 5, or $BENCH_ROUNDS)"
    )
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in ALL]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ALL)}")
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        os.environ["BENCH_ROUNDS"] = str(args.rounds)  # read by _util at import
    print(f"sslsms-notify benchmarks on Python {platform.python_version()}, {platform.machine()}")
    for name in args.names or ALL:
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    main()
