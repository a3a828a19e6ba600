"""A request the relay refuses: the status, one line naming the field, and headers to add."""

from __future__ import annotations

from collections.abc import Sequence


class HTTPError(Exception):
    def __init__(
        self, status: int, message: str, *, field: str | None = None, headers: Sequence[tuple[str, str]] = ()
    ):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, tuple(headers)
