"""Small helpers shared by the benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def per_call_ns(func: Callable[[], object], calls: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` nanoseconds per call (best: least disturbed by the rest of the machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(calls):
            func()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def row(name: str, value: str, baseline: str = "", ratio: str = "") -> None:
    print(f"  {name:<48} {value:>18} {baseline:>18} {ratio:>10}")


def header(title: str) -> None:
    print(f"\n{title}")
    row("", "measured", "baseline", "ratio")


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not installed (scripts/test-deps.sh)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                directory,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                    break
                except OSError:
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()
