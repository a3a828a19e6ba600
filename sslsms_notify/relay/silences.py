"""The relay's silences: list, add and expire them over HTTP, on the relay's store.

    GET    /v1/silences          {"silences": [{"id", "matchers", "comment", "starts_at",
                                  "ends_at", "held", "groups"}, ...]}
    POST   /v1/silences          {"matchers": ["alertname=DiskFull"], "for": "2h", "comment": "..."}
                                 -> 201 {"id": ..., ...}
    DELETE /v1/silences/{id}     -> 200 the silence as it ended; its SMS go out at once

The same rules as ``sslsms-notify silence`` and :meth:`Notifier.silence
<sslsms_notify.alerting.notifier.Notifier.silence>` (:mod:`sslsms_notify.alerting.silences`):
a bad matcher, a duration over 30 days or an unknown id is a 422 naming the field
(``matchers[1]``, ``for``, ``id``). A store that cannot share a silence with the other
processes now (Redis unreachable: writes go to this host's spool) answers 503.

The handlers are plain functions of the notifier and the body; each store call runs
in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote

from ..alerting.notifier import Notifier
from ..alerting.silences import UnknownSilenceError
from ..alerting.silences import add_silence as add
from ..stores.base import StoreUnavailableError
from ..validation import InvalidValue
from .payloads import PayloadError, decode_body
from .payloads.common import field_at, kind_of

#: the collection; ``PREFIX + id`` is one silence
PATH = "/v1/silences"
PREFIX = PATH + "/"
#: the route of one silence (its id is read from the request's path)
ONE = PREFIX + "{id}"
_KEYS = ("matchers", "for", "comment")
Scope = dict[str, Any]


async def list_silences(notifier: Notifier, scope: Scope, body: bytes) -> tuple[int, Any]:
    found = await _store(notifier.silences)
    return 200, {"silences": [s.as_json() for s in found]}


async def add_silence(notifier: Notifier, scope: Scope, body: bytes) -> tuple[int, Any]:
    data = decode_body(body)
    if not isinstance(data, dict):
        raise PayloadError("body", f"must be a JSON object, not {kind_of(data)}", status=400)
    unknown = [k for k in data if k not in _KEYS]
    if unknown:
        raise PayloadError(field_at("", unknown[0]), f"unknown field (known: {', '.join(_KEYS)})")
    for name in ("matchers", "for"):
        if name not in data:
            raise PayloadError(name, "is required")
    matchers = data["matchers"]
    if not isinstance(matchers, list):
        raise PayloadError("matchers", f"must be an array of matchers, not {kind_of(matchers)}")
    info = await _store(lambda: add(notifier.store, matchers, data["for"], data.get("comment") or ""))
    return 201, info.as_json()


async def expire_silence(notifier: Notifier, scope: Scope, body: bytes) -> tuple[int, Any]:
    silence_id = unquote(scope["path"].rstrip("/")[len(PREFIX) :])
    info = await _store(lambda: notifier.expire_silence(silence_id))
    return 200, {**info.as_json(), "expired": True}


async def _store(call: Any) -> Any:
    """``call()`` in a worker thread; what it refuses becomes a PayloadError naming the field."""
    try:
        return await asyncio.to_thread(call)
    except UnknownSilenceError as exc:
        raise _said(PayloadError("id", "no active silence has this id"), exc) from None
    except InvalidValue as exc:  # "matchers[1]='x': must be ...", "for='45d': ..."
        raise _said(PayloadError(exc.label, exc.rule), exc) from None
    except StoreUnavailableError as exc:
        raise PayloadError("store", str(exc), status=503) from None


def _said(error: PayloadError, cause: Exception) -> PayloadError:
    """``error`` (its field), saying what ``cause`` says: one wording for every door."""
    error.args = (str(cause),)
    return error
