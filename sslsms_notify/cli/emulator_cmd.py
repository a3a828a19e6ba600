"""``sslsms-notify emulator`` and ``demo``: the gateway emulator, served or replayed in process.

Neither needs an account or the network.
"""

from __future__ import annotations

import socket

import click

from ..extras import require
from .common import CONTEXT, InputError


@click.command(context_settings=CONTEXT)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", default=8025, show_default=True, type=click.IntRange(0, 65535), help="0: any free port."
)
@click.option("--tps", type=click.IntRange(min=1), help="Answer 4031 above this many requests per second.")
@click.option("--daily-quota", type=click.IntRange(min=0), help="Answer 4029 after this many requests a day.")
@click.option("--quiet", is_flag=True, help="Do not print accepted SMS.")
def emulator(host: str, port: int, tps: int | None, daily_quota: int | None, quiet: bool) -> None:
    """Run the gateway emulator; print each SMS it accepts.

    \b
    Token: emulator-token-0123456789   SID: EMULATOR
    Inbox: GET http://HOST:PORT/__emulator/messages
    Example:
      sslsms-notify emulator --port 8025 &
      SSLSMS_URL="sslsms://EMULATOR:emulator-token-0123456789@01712345678?base_url=http://127.0.0.1:8025" \\
        sslsms-notify send "hello"
    """
    require("uvicorn")  # the HTTP server's optional part: one line naming the extra if missing
    from ..emulator import DEMO_API_TOKEN, DEMO_SID, EmulatorConfig, EmulatorServer, GatewayEmulator

    port = _free_to_listen(host, port)
    gateway = GatewayEmulator(EmulatorConfig(tps_limit=tps, daily_quota=daily_quota))
    if not quiet:
        gateway.subscribe(lambda m: click.echo(m.line()))
    click.echo(f"SSL Push SMS v3 emulator on http://{host}:{port}  (token {DEMO_API_TOKEN}, sid {DEMO_SID})")
    try:
        EmulatorServer(gateway, host=host, port=port).serve_forever()
    except OSError as exc:
        raise InputError(f"--port {port}: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _free_to_listen(host: str, port: int) -> int:
    """The port, once we know it can be bound (a port in use is one line, not a traceback)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
            return int(probe.getsockname()[1])
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"--port {port}: cannot listen on {host}:{port}: {reason}") from None


@click.command(context_settings=CONTEXT)
def demo() -> None:
    """Replay an incident through the logging handler on the embedded emulator.

    No account and no network: shows what each on-call phone would receive.
    """
    from ..demo import run_demo

    run_demo(click.echo)
