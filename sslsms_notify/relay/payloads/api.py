"""Our own API: ``POST /v1/alerts`` bodies, strict (our own clients can fix what they send)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ...severity import SEVERITIES, severity_name
from .common import (
    MAX_ITEMS,
    MAX_KEY,
    MAX_NAME,
    MAX_SOURCE,
    MAX_TEXT,
    AlertSpec,
    PayloadError,
    field_at,
    item_at,
    kind_of,
    shown_value,
)

# --- our own API -------------------------------------------------------------------------

_API_FIELDS: Final = frozenset({"text", "severity", "key", "groups", "source", "tags"})


def parse_alerts(data: object, *, max_alerts: int = 1000) -> list[AlertSpec]:
    """Our API: one alert object, an array of them, or ``{"alerts": [...]}``.

    Strict (unknown fields are refused), because our own clients can fix what they send
    and a typo such as ``"serverity"`` must not silently page at the default severity.
    """
    if isinstance(data, dict) and "alerts" in data and "text" not in data:
        for name in data:
            if name != "alerts":
                raise PayloadError(field_at("", name), "is not a field here: the body holds only 'alerts'")
        items, path = data["alerts"], "alerts"
        if not isinstance(items, list):
            raise PayloadError("alerts", f"must be an array of alert objects, not {kind_of(items)}")
    elif isinstance(data, dict):
        return [_api_alert(data, "")]
    elif isinstance(data, list):
        items, path = data, ""
    else:
        raise PayloadError(
            "body", f"must be an alert object or an array of them, not {kind_of(data)}", status=400
        )
    if not items:
        raise PayloadError(path or "body", "holds no alert")
    if len(items) > max_alerts:
        raise PayloadError(
            path or "body", f"holds {len(items)} alerts; at most {max_alerts} are accepted at once"
        )
    return [_api_alert(item, item_at(path, i)) for i, item in enumerate(items)]


def _api_alert(item: object, path: str) -> AlertSpec:
    if not isinstance(item, dict):
        raise PayloadError(path or "body", f"must be an alert object, not {kind_of(item)}")
    for name in item:
        if name not in _API_FIELDS:
            known = ", ".join(sorted(_API_FIELDS))
            raise PayloadError(field_at(path, name), f"is not a known field (known: {known})")
    text = _api_str(item, "text", path, limit=MAX_TEXT)
    if text is None:
        raise PayloadError(field_at(path, "text"), "is required")
    severity = _api_severity(item.get("severity"), field_at(path, "severity"))
    source = _api_str(item, "source", path, limit=MAX_SOURCE) or ""
    if not all(c.isprintable() or c == " " for c in source):
        # the SMS shows it as the origin, outside the text that clean_text cleans; like
        # the CLI's --source, refused rather than silently changed
        raise PayloadError(
            field_at(path, "source"),
            "must be one line of visible characters (no control or bidirectional ones)",
        )
    return AlertSpec(
        text=text,
        severity=severity,
        key=_api_str(item, "key", path, limit=MAX_KEY),
        groups=_api_groups(item.get("groups"), field_at(path, "groups")),
        source=source,
        tags=_api_tags(item.get("tags"), field_at(path, "tags")),
    )


def _checked_name(value: object, path: str, *, limit: int, what: str = "a string") -> str:
    """A non-empty stripped string of at most ``limit`` characters, or a PayloadError."""
    if not isinstance(value, str):
        raise PayloadError(path, f"must be {what}, not {kind_of(value)}")
    value = value.strip()
    if not value:
        raise PayloadError(path, "must not be empty (leave the field out instead)")
    if len(value) > limit:
        raise PayloadError(path, f"is {len(value)} characters long; at most {limit} are allowed")
    return value


def _api_str(item: Mapping[str, object], name: str, path: str, *, limit: int) -> str | None:
    """An optional string field; JSON null counts as absent."""
    value = item.get(name)
    if value is None:
        return None
    return _checked_name(value, field_at(path, name), limit=limit)


def _api_severity(value: object, path: str) -> str:
    if value is None:
        return "error"
    if not isinstance(value, str):
        raise PayloadError(path, f"must be a string, not {kind_of(value)}")
    severity = severity_name(value)
    if severity is None:
        raise PayloadError(path, f"{shown_value(value)} is not one of {', '.join(SEVERITIES)}")
    return severity


def _api_groups(value: object, path: str) -> tuple[str, ...] | None:
    """An array of names, or one string; the string is split on commas like a label."""
    if value is None:
        return None
    if isinstance(value, str):
        names = [_checked_name(part, path, limit=MAX_NAME) for part in value.split(",")]
    elif isinstance(value, list):
        names = [_checked_name(v, item_at(path, i), limit=MAX_NAME) for i, v in enumerate(value)]
    else:
        raise PayloadError(path, f"must be a string or an array of strings, not {kind_of(value)}")
    groups = tuple(dict.fromkeys(names))
    if not groups:
        raise PayloadError(path, "names no group or phone number (leave it out to let routing rules decide)")
    if len(groups) > MAX_ITEMS:
        raise PayloadError(path, f"names {len(groups)} recipients; at most {MAX_ITEMS} are allowed")
    return groups


def _api_tags(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PayloadError(path, f"must be an array of strings, not {kind_of(value)}")
    tags = tuple(
        dict.fromkeys(_checked_name(v, item_at(path, i), limit=MAX_NAME) for i, v in enumerate(value))
    )
    if len(tags) > MAX_ITEMS:
        raise PayloadError(path, f"holds {len(tags)} tags; at most {MAX_ITEMS} are allowed")
    return tags
