"""Emulator server throughput on loopback: single and 100-number bulk requests.

Baseline: the same uvicorn server with an app that returns a fixed JSON body
without parsing or validating anything (the HTTP stack's floor).
"""

from __future__ import annotations

import json
import threading
import time

import httpx

from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorServer
from sslsms_notify.emulator.server import EmulatorApp
from sslsms_notify.gateway.client import default_transport

from ._util import header, row

SECONDS = 3.0
THREADS = 4


class FixedAnswer(EmulatorApp):
    BODY = json.dumps({"status": "SUCCESS", "status_code": 200, "error_message": "", "smsinfo": []}).encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await self._send(send, 200, self.BODY, {"content-type": "application/json"})


def _load(url: str, path: str, make_body, seconds: float) -> int:
    done = [0] * THREADS
    stop = time.monotonic() + seconds

    def worker(index: int) -> None:
        with httpx.Client(base_url=url, transport=default_transport()) as http:
            n = 0
            while time.monotonic() < stop:
                http.post(path, json=make_body(index, n))
                n += 1
            done[index] = n

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def single_body(worker: int, n: int) -> dict:
    return {
        "api_token": DEMO_API_TOKEN,
        "sid": DEMO_SID,
        "msisdn": "01711111111",
        "sms": "bench",
        "csms_id": f"w{worker}n{n}",
    }


def bulk_body(worker: int, n: int) -> dict:
    return {
        "api_token": DEMO_API_TOKEN,
        "sid": DEMO_SID,
        "sms": "bench",
        "msisdn": [f"0171{i:07d}" for i in range(100)],
        "batch_csms_id": f"b{worker}n{n}",
    }


def main() -> dict[str, float]:
    header(f"Emulator server on loopback ({THREADS} client threads, {SECONDS:.0f} s each)")
    results: dict[str, float] = {}
    baseline_server = EmulatorServer()
    baseline_server.start()
    baseline_server._server.config.app.__class__ = FixedAnswer  # type: ignore[union-attr]
    floor = _load(baseline_server.url, "/api/v3/send-sms", single_body, SECONDS) / SECONDS
    baseline_server.stop()
    with EmulatorServer() as server:
        singles = _load(server.url, "/api/v3/send-sms", single_body, SECONDS) / SECONDS
        server.emulator.reset()
        bulks = _load(server.url, "/api/v3/send-sms/bulk", bulk_body, SECONDS) / SECONDS
    row("single: requests/s", f"{singles:,.0f}", f"{floor:,.0f}", f"{singles / floor:.2f}x")
    row("single: SMS/s", f"{singles:,.0f}")
    row("bulk of 100: requests/s", f"{bulks:,.0f}", f"{floor:,.0f}", f"{bulks / floor:.2f}x")
    row("bulk of 100: SMS/s", f"{bulks * 100:,.0f}", f"{floor:,.0f}", f"{bulks * 100 / floor:.1f}x")
    results.update(single_rps=singles, bulk_rps=bulks, bulk_sms=bulks * 100, floor_rps=floor)
    return results


if __name__ == "__main__":
    main()
