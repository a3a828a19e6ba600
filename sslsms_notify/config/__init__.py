"""One configuration for every door: an ``sslsms://`` URL, a TOML file, the environment, or keywords.

    sslsms://{sid}:{api_token}@{msisdn}/{msisdn}/...?base_url=...&dedup=300&tps=10

Every setting of every section is declared once (:mod:`.registry`): its field, its URL
argument, its TOML key, its environment variable, its default, a one-line doc and the
rule its values must follow. :data:`SETTINGS` are the fields of :class:`Settings`
(``[gateway]``, ``[pipeline]``, ``[groups]``, ``[[routes]]``); :data:`RELAY_SETTINGS`
those of :class:`~sslsms_notify.relay.settings.RelaySettings` (``[relay]``). Reading
(:mod:`.sources`), checking (:meth:`Settings.validated`), printing
(:meth:`Settings.url`, :meth:`Settings.describe`) and the configuration reference
(:func:`reference_rows`) all read those declarations, so a new setting is one
declaration and one field.

A bad value is refused where it enters, in one line that names the field as the
user wrote it, the value and the rule: ``cap_period='0': must be a number of seconds
greater than 0 and at most 2592000 (30 days)``, ``config.toml: pipeline.dedup_window='five':
...``. Credentials are never shown (:func:`mask_url`).

The modules: :mod:`.registry` (the declarations), :mod:`.rules` (rules beyond plain
values; the plain ones are in :mod:`sslsms_notify.validation`), :mod:`.sources` (URL,
TOML file, environment), :mod:`.settings` (the :class:`Settings` record),
:mod:`.state` (the CLI's state files), :mod:`.errors`.
"""

from __future__ import annotations

from .errors import ConfigError, NoConfiguration, mask_url
from .registry import (
    BY_NAME,
    BY_URL_ARG,
    DAY,
    MONTH,
    PIPELINE_FIELDS,
    RELAY_BY_NAME,
    RELAY_SETTINGS,
    SCHEME,
    SETTINGS,
    URL_ARGS,
    ReferenceRow,
    Setting,
    checked_options,
    reference_rows,
)
from .rules import Groups, Numbers, Routes, looks_like_number
from .settings import DEFAULT_CONFIG_PATH, Settings
from .sources import read_section
from .state import (
    LEGACY_STATE_NAME,
    account_id,
    default_state_path,
    default_state_url,
    legacy_state_path,
    state_files,
)

__all__ = [
    "BY_NAME",
    "BY_URL_ARG",
    "DAY",
    "DEFAULT_CONFIG_PATH",
    "LEGACY_STATE_NAME",
    "MONTH",
    "PIPELINE_FIELDS",
    "RELAY_BY_NAME",
    "RELAY_SETTINGS",
    "SCHEME",
    "SETTINGS",
    "URL_ARGS",
    "ConfigError",
    "Groups",
    "NoConfiguration",
    "Numbers",
    "ReferenceRow",
    "Routes",
    "Setting",
    "Settings",
    "account_id",
    "checked_options",
    "default_state_path",
    "default_state_url",
    "legacy_state_path",
    "looks_like_number",
    "mask_url",
    "read_section",
    "reference_rows",
    "state_files",
]
