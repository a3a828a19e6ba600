"""How long shutdown takes when the gateway hangs: bounded by the timeout, whatever the gateway does.

- ``Notifier.close(timeout)`` with 20 SMS pending and every request hanging for
  30 s (the client's timeout is its default, 10 s), for timeouts 1, 3 and 5 s,
  on memory and SQLite. Baseline: the same close with a healthy gateway.
- Interpreter exit of a script with ``SMSHandler(close_timeout=3)`` that logs one
  error and exits: the time from ``sys.exit()`` to the process being gone.
  Target: timeout + 1 s.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time

import httpx

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID

from ._util import emulator_process, header, row, word

EXIT_SCRIPT = textwrap.dedent(
    """
    import logging, sys, time
    from sslsms_notify import SMSHandler
    logging.getLogger().addHandler(SMSHandler(sys.argv[1], close_timeout=3))
    logging.getLogger("app").error("the gateway hangs on this one")
    time.sleep(0.5)
    print(time.time(), flush=True)
    sys.exit(0)
    """
)


def _close_time(url: str, store: str, timeout: float) -> float:
    notifier = Notifier(
        GatewayClient(DEMO_API_TOKEN, DEMO_SID, base_url=url),
        recipients=["01711111111"],
        store=store,
        dedup_window=0,
        per_recipient_limit=None,
        close_at_exit=None,
    )
    for i in range(20):
        notifier.alert(f"pending at shutdown {word(i)}")
    notifier.sync(5)
    time.sleep(0.3)  # the dispatcher is inside its first request
    started = time.perf_counter()
    notifier.close(timeout)
    return time.perf_counter() - started


def main() -> dict[str, float]:
    results: dict[str, float] = {}
    header("Shutdown with 20 SMS pending", ("hanging gateway", "healthy gateway", "bound"))
    with emulator_process() as url, tempfile.TemporaryDirectory() as directory:
        control = httpx.Client(base_url=url)
        run = iter(range(1000))
        for store_kind in ("memory", "sqlite"):
            for timeout in (1.0, 3.0, 5.0):
                times = {}
                for hanging in (True, False):
                    control.delete("/__emulator/faults")
                    if hanging:
                        control.post(
                            "/__emulator/faults", json={"kind": "timeout", "seconds": 600, "hold": 30}
                        )
                    store = "memory" if store_kind == "memory" else f"sqlite:///{directory}/s{next(run)}.db"
                    times[hanging] = _close_time(url, store, timeout)
                row(
                    f"close({timeout:.0f}) on {store_kind}",
                    f"{times[True]:.2f} s",
                    f"{times[False]:.2f} s",
                    f"<= {timeout + 1:.0f} s",
                )
                results[f"close_{store_kind}_{timeout:.0f}_hanging_s"] = times[True]
        control.post("/__emulator/faults", json={"kind": "timeout", "seconds": 600, "hold": 30})
        sslsms_url = (
            f"sslsms://{DEMO_SID}:{DEMO_API_TOKEN}@01711111111"
            f"?base_url={url}&store=sqlite:///{directory}/exit.db"
        )
        proc = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, sslsms_url], capture_output=True, text=True, timeout=120
        )
        exit_took = time.time() - float(proc.stdout.strip().splitlines()[-1])
        row("interpreter exit, SMSHandler(close_timeout=3)", f"{exit_took:.2f} s", "", "<= 4 s")
        results["exit_hanging_s"] = exit_took
        control.delete("/__emulator/faults")
    return results


if __name__ == "__main__":
    main()
