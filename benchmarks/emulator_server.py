"""Emulator server throughput on loopback: single and 100-number bulk requests.

The emulator runs in its own process (``sslsms-notify emulator``). Baseline, in
its own process too and interleaved round by round: the same uvicorn server with
an app that returns a fixed JSON answer without parsing or validating anything
(the HTTP stack's floor). Requests are compared with requests; SMS per second of
bulk requests is shown on its own, not divided by the floor's requests.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx

from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID
from sslsms_notify.gateway.client import default_transport

from ._util import ROUNDS, emulator_process, header, interleaved, rate, row, server_process

SECONDS = 2.0
THREADS = 4
FIXED = json.dumps({"status": "SUCCESS", "status_code": 200, "error_message": "", "smsinfo": []}).encode()


async def fixed_answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The floor: read the body, answer a constant."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(FIXED)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": FIXED})


def floor_process() -> AbstractContextManager[str]:
    """The fixed-answer app in its own process; yields its base URL."""
    return server_process("benchmarks.emulator_server", "--floor", "{port}")


def _serve_floor(port: int) -> None:
    import socket

    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the emulator does
    sock.bind(("127.0.0.1", port))
    config = uvicorn.Config(fixed_answer, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def _load(url: str, path: str, make_body: Callable[[int, int], dict[str, Any]]) -> float:
    done = [0] * THREADS
    stop = time.monotonic() + SECONDS

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
    return sum(done) / SECONDS


_run = iter(range(10**9))


def single_body(worker: int, n: int, run: int = 0) -> dict[str, Any]:
    return {
        "api_token": DEMO_API_TOKEN,
        "sid": DEMO_SID,
        "msisdn": "01711111111",
        "sms": "bench",
        "csms_id": f"r{run}w{worker}n{n}",
    }


def bulk_body(worker: int, n: int, run: int = 0) -> dict[str, Any]:
    return {
        "api_token": DEMO_API_TOKEN,
        "sid": DEMO_SID,
        "sms": "bench",
        "msisdn": [f"0171{i:07d}" for i in range(100)],
        "batch_csms_id": f"b{run}w{worker}n{n}",
    }


def main() -> dict[str, float]:
    with emulator_process() as emulator, floor_process() as floor:
        control = httpx.Client(base_url=emulator)

        def on(url: str, path: str, body: Callable[..., dict[str, Any]]) -> Callable[[], float]:
            def run() -> float:
                if url == emulator:
                    control.post("/__emulator/reset")  # the inbox must not grow round after round
                number = next(_run)
                return _load(url, path, lambda w, n: body(w, n, number))

            return run

        samples = interleaved(
            {
                "emulator single": on(emulator, "/api/v3/send-sms", single_body),
                "floor single": on(floor, "/api/v3/send-sms", single_body),
                "emulator bulk": on(emulator, "/api/v3/send-sms/bulk", bulk_body),
                "floor bulk": on(floor, "/api/v3/send-sms/bulk", bulk_body),
            }
        )
    header(
        f"Emulator server, own process, {THREADS} client threads, {SECONDS:.0f} s x {ROUNDS} rounds",
        ("min", "median", "floor median", "ratio"),
    )
    for kind in ("single", "bulk"):
        ours, floor_s = samples[f"emulator {kind}"], samples[f"floor {kind}"]
        row(
            f"{kind} requests/s",
            rate(ours.min),
            rate(ours.median),
            rate(floor_s.median),
            f"{ours.median / floor_s.median:.2f}x",
        )
    bulk = samples["emulator bulk"]
    row("bulk of 100: SMS/s (requests x 100)", rate(bulk.min * 100), rate(bulk.median * 100), "", "")
    return {
        "single_rps": samples["emulator single"].median,
        "bulk_rps": bulk.median,
        "bulk_sms_per_s": bulk.median * 100,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--floor"]:
        _serve_floor(int(sys.argv[2]))
    else:
        main()
