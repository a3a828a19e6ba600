"""Shared by the benchmarks: interleaved rounds, per-call latency, servers in their own processes.

Rules every benchmark follows (so the figures cannot flatter us):

- the measured code runs as users run it: worker threads on, default settings
  unless a row says otherwise;
- the baseline does the same work, in the same run, interleaved with the
  measured code round by round (the order rotates), so a noisy moment hurts
  both alike;
- several rounds; we print the min and the median of the per-round figures,
  and for latencies p50 / p99 / max over every call;
- servers (the gateway emulator, Redis) run in their own processes.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))

# Benchmarks never touch the user's state (the CLI's SQLite file, Redis spools).
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="sslsms-bench-state-")


@dataclass
class Samples:
    """Per-round figures (e.g. ns per call, or ops/s) and, optionally, every call's latency."""

    rounds: list[float] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def min(self) -> float:
        return min(self.rounds)

    @property
    def median(self) -> float:
        return statistics.median(self.rounds)

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def interleaved(
    variants: dict[str, Callable[[], float | tuple[float, list[int]]]], rounds: int = ROUNDS
) -> dict[str, Samples]:
    """Run each variant once per round, rotating the order; collect what each returns."""
    results = {name: Samples() for name in variants}
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            gc.collect()
            value = variants[name]()
            if isinstance(value, tuple):
                figure, latencies = value
                results[name].latencies_ns.extend(latencies)
            else:
                figure = value
            results[name].rounds.append(figure)
    return results


def timed_calls(func: Callable[[int], object], calls: int) -> tuple[float, list[int]]:
    """Mean ns per call, and every call's latency (perf_counter_ns around each, same for all)."""
    clock = time.perf_counter_ns
    latencies = [0] * calls
    start = clock()
    for i in range(calls):
        t0 = clock()
        func(i)
        latencies[i] = clock() - t0
    return (clock() - start) / calls, latencies


def header(title: str, columns: Sequence[str] = ("measured", "baseline", "ratio")) -> None:
    print(f"\n{title}")
    print(f"  {'':<50}" + "".join(f"{c:>17}" for c in columns))


def row(name: str, *values: str) -> None:
    print(f"  {name:<50}" + "".join(f"{v:>17}" for v in values))


def ns(value: float) -> str:
    return f"{value / 1000:,.2f} µs" if value >= 1000 else f"{value:,.0f} ns"


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def word(i: int) -> str:
    """A distinct word for each i, letters only: numbers in a text are blanked by the
    fingerprint rule, so texts differing only by a number are the same alert."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for _ in range(5):
        i, digit = divmod(i, 26)
        out.append(letters[digit])
    return "".join(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def server_process(*args: str) -> Iterator[str]:
    """``python -m <args...>`` listening on a free port (passed as ``{port}`` in args)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", *(a.format(port=port) for a in args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # still holding a "hanging" connection open
            proc.kill()
            proc.wait(10)


def emulator_process() -> AbstractContextManager[str]:
    """``sslsms-notify emulator`` in its own process; yields its base URL."""
    return server_process("sslsms_notify.cli", "emulator", "--port", "{port}", "--quiet")


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not installed (scripts/test-deps.sh)")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", directory]
        proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
