"""What a configuration that cannot be used raises, and how any text in it is masked."""

from __future__ import annotations

from ..validation import mask_credentials


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where and why, in one line."""


class NoConfiguration(ConfigError):
    """No URL, no config file and no ``SSLSMS_*`` variables: nothing to read at all."""


def mask_url(text: str) -> str:
    """Any text with URLs in it, every credential replaced by ``****`` (token, passwords)."""
    return mask_credentials(text)
