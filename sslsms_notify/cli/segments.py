"""``sslsms-notify segments``: how a text is encoded and how many SMS it costs."""

from __future__ import annotations

import json

import click

from ..gateway.text import MAX_SMS_CHARS, count_segments, truncate_to_segments
from .common import CONTEXT, InputError
from .inputs import argument_text, stdin_text


@click.command(context_settings=CONTEXT)
@click.argument("text", required=False)
@click.option(
    "--max-segments",
    default=2,
    show_default=True,
    type=click.IntRange(1, 15),
    help="Budget to check against (1-15).",
)
@click.option("--json", "as_json", is_flag=True)
def segments(text: str | None, max_segments: int, as_json: bool) -> None:
    """Show TEXT's encoding, SMS segment count and what a budget would cut.

    \b
    Examples:
      sslsms-notify segments "সার্ভার ডাউন {db1}"
      echo "db1 down" | sslsms-notify segments --max-segments 1
    """
    if text is None:
        text = stdin_text().rstrip("\n")
        what = "standard input"
    else:
        text = argument_text(text, "TEXT")
        what = "TEXT"
    if not text.strip():  # as send: nothing to count
        raise InputError(f"{what} is empty")
    info = count_segments(text)
    cut = truncate_to_segments(text, max_segments) if text else text
    report = {
        "encoding": str(info.encoding),
        "sms_type": info.sms_type,
        "characters": info.characters,
        "units": info.units,
        "segments": info.segments,
        "max_segments": max_segments,
        "too_long_for_gateway": info.characters > MAX_SMS_CHARS,
        "truncated": cut != text,
        "kept": cut,
    }
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False))
        return
    click.echo(
        f"{info.encoding} ({info.sms_type}), {info.characters} characters, "
        f"{info.units} units, {info.segments} SMS"
    )
    if cut != text:
        # what cuts it: the budget, the gateway's limit on characters, or both
        over = [f"over {max_segments} SMS"] if info.segments > max_segments else []
        if info.characters > MAX_SMS_CHARS:
            over.append(f"over the gateway's {MAX_SMS_CHARS}-character limit")
        click.echo(f"{' and '.join(over) or f'over {max_segments} SMS'}; would send: {cut}")
