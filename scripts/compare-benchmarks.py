#!/usr/bin/env python3
"""Compare the benchmarks of this checkout with another one, side by side in one run.

    python scripts/compare-benchmarks.py ../before [NAME ...] [--repeats 3] [--rounds 5]

Each benchmark already measures its code against a baseline interleaved in the same
run, and prints a ratio per row. This runs every benchmark in both checkouts (each with
its own ``.venv``), alternating which goes first, ``--repeats`` times, and prints each
row's median ratio before and after, and the change. A redesign that promised to cost
nothing is held to it this way: the machine's mood moves both sides alike.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
#: a result row: its label, then columns, the last one the ratio ("0.76x", "83x fewer")
ROW = re.compile(r"^  (?P<label>\S.*?)\s{2,}.*\s(?P<ratio>[\d,.]+)x(?: (?P<word>\w+))?\s*$")


def ratios(output: str) -> dict[str, float]:
    """``{"Section / row label": ratio}`` from one run's output."""
    found: dict[str, float] = {}
    section = ""
    for line in output.splitlines():
        if line and not line.startswith(" "):
            section = line.split("(")[0].strip()
            continue
        match = ROW.match(line)
        if match:
            found[f"{section} / {match['label'].strip()}"] = float(match["ratio"].replace(",", ""))
    return found


def run(checkout: Path, name: str, rounds: int) -> dict[str, float]:
    python = checkout / ".venv" / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "benchmarks", name],
        cwd=checkout,
        env={**os.environ, "BENCH_ROUNDS": str(rounds)},  # older checkouts have no --rounds
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        sys.exit(f"{checkout}: benchmark {name} failed:\n{result.stdout}\n{result.stderr}")
    return ratios(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("other", type=Path, help="the checkout to compare with (it needs its own .venv)")
    parser.add_argument("names", nargs="*", help="benchmarks (default: every one this checkout has)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side, alternating (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per run (default 5)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed change (default 0.10)")
    args = parser.parse_args()
    other = args.other.resolve()
    if args.names:
        names = args.names
    else:
        listing = subprocess.run(
            [str(HERE / ".venv" / "bin" / "python"), "-m", "benchmarks", "--help"],
            cwd=HERE,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        names = re.findall(r"^  (\w+)  ", listing.partition("benchmarks:")[2], re.MULTILINE)
    worst = 0.0
    print(f"{'row':72} {'before':>9} {'after':>9} {'change':>8}")
    for name in names:
        before: dict[str, list[float]] = {}
        after: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            sides = [(other, before), (HERE, after)]
            for checkout, into in sides if repeat % 2 == 0 else reversed(sides):
                for row, value in run(checkout, name, args.rounds).items():
                    into.setdefault(row, []).append(value)
        for row in after:
            if row not in before:
                print(f"{row[:72]:72} {'-':>9} {statistics.median(after[row]):>8.2f}x   (new)")
                continue
            b, a = statistics.median(before[row]), statistics.median(after[row])
            change = (a - b) / b if b else 0.0
            worst = max(worst, abs(change))
            # which way is better depends on the row (a cost, a rate): any move past the
            # tolerance is shown, for a person to read
            flag = "" if abs(change) <= args.tolerance else "  <-- differs"
            print(f"{row[:72]:72} {b:>8.2f}x {a:>8.2f}x {change:>+7.1%}{flag}")
        sys.stdout.flush()
    print(f"\nlargest change: {worst:.1%} (tolerance {args.tolerance:.0%})")


if __name__ == "__main__":
    main()
