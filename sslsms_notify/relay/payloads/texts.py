"""What an Alertmanager or Grafana alert says on a phone: ``name (instance): detail``.

Values as people read them (``A=93.5``, never ``1.235e+04``); Grafana's own rules for
alerts that could not be evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Final

from .options import (
    DATASOURCE_ALERTS,
    DETAIL_ANNOTATIONS,
    GRAFANA_ERROR_ID,
    MAX_VALUES_SHOWN,
    Flavor,
    WebhookOptions,
)


def webhook_text(
    alert: Mapping[str, object],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    options: WebhookOptions,
    flavor: Flavor,
) -> str:
    """``name (instance): detail``, the first rule that gives a detail winning.

    Alertmanager: the ``summary``, ``description`` or ``message`` annotation, else the
    other labels as ``key=value``. Grafana (see :func:`parse_grafana`) puts two rules
    first, because a rule that could not be evaluated still carries its summary (say
    "CPU above 90%"), which would then page a condition nobody measured:

    1. ``DatasourceError`` / ``DatasourceNoData``: ``DatasourceError (rule: High CPU):
       <the Error annotation>``, the rule's name from the ``rulename`` label;
    2. any other alert with an ``Error`` annotation: ``High CPU (web1): error: <it>``;
    3. the ``summary``, ``description`` or ``message`` annotation;
    4. the values: ``High CPU (web1): A=93.5 C=1``, never Grafana's ``[ var=... ]`` dump;
    5. the labels, as for Alertmanager.
    """
    name = labels.get("alertname", "").strip() or "Alert"
    instance = labels.get("instance", "").strip()
    detail = ""
    if flavor.grafana:
        error = GRAFANA_ERROR_ID.sub("", annotations.get("Error", "").strip(), count=1)
        if name in DATASOURCE_ALERTS:
            about = {"rule": labels.get("rulename", "").strip(), "instance": instance}
            which = ", ".join(f"{k}: {v}" for k, v in about.items() if v)
            return name + (f" ({which})" if which else "") + (f": {error}" if error else "")
        detail = f"error: {error}" if error else ""
    detail = detail or first_annotation(annotations, DETAIL_ANNOTATIONS)
    if not detail and flavor.grafana:
        detail = grafana_values(alert)
    if not detail:
        hidden = {"alertname", "instance", options.severity_label, options.groups_label}
        detail = " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in hidden and v.strip())
    return name + (f" ({instance})" if instance else "") + (f": {detail}" if detail else "")


def first_annotation(values: Mapping[str, str], names: tuple[str, ...]) -> str:
    for name in names:
        text = values.get(name, "").strip()
        if text:
            return text
    return ""


def grafana_values(alert: Mapping[str, object]) -> str:
    """``A=93.5 C=1``: ``values``, else parsed out of ``valueString``.

    ``values`` is null when a value is NaN or infinite (Go's JSON encoder refuses them,
    and Grafana then drops the whole map) or in bodies from before it existed;
    ``valueString`` is always there: ``[ var='A' labels={instance=web1} value=93.5 ], [
    var='C' labels={instance=web1} value=1 ]``, or ``[ var='B0' metric='Count' labels={}
    value=1 ]`` for a classic condition, ``[ metric='' labels={} value=14151.33 ]`` before
    Grafana 9. Each item gives ``var=value`` (the metric, or ``value``, when there is no
    var); its labels are the alert's own and already in the text. A ``valueString`` none
    of whose items can be read gives nothing: the labels speak instead of the raw dump.
    """
    values = alert.get("values")
    pairs: list[tuple[str, str]] = []
    if isinstance(values, dict):
        pairs = [(str(k), number_text(v)) for k, v in values.items() if is_number(v)]
    value_string = alert.get("valueString")
    if not pairs and isinstance(value_string, str):
        pairs = [
            (m["var"] or m["metric"] or "value", _value_token(m["value"]))
            for m in _VALUE_ITEM.finditer(value_string)
        ]
    return pairs_text(pairs)


# One item of Grafana's valueString, as its extractEvalString writes it (Go's %v for the value).
_VALUE_ITEM = re.compile(
    r"\[ (?:var='(?P<var>[^']*)' )?(?:metric='(?P<metric>.*?)' )?labels=\{.*?\} value=(?P<value>\S+) \]"
)


def _value_token(token: str) -> str:
    """A value from ``valueString``: ``1.2345e+06``, ``NaN``, ``+Inf``, or ``null`` (no value)."""
    try:
        return format_number(float(token))
    except ValueError:
        return token[:20]


def pairs_text(pairs: list[tuple[str, str]]) -> str:
    """``A=93.5 C=1``, at most MAX_VALUES_SHOWN of them, then ``+N more``."""
    shown = [f"{name.strip() or 'value'}={value}" for name, value in pairs[:MAX_VALUES_SHOWN]]
    rest = len(pairs) - MAX_VALUES_SHOWN
    return " ".join(shown) + (f" +{rest} more" if rest > 0 else "")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_SMALLEST_FIXED: Final = 1e-6  # below this, fixed notation is a run of zeros nobody counts
_LARGEST_FIXED: Final = 10**9


def format_number(value: int | float) -> str:
    """A measured value as a person reads it on a phone: ``93.5``, ``14151``, ``0.001235``.

    * Whole numbers as whole numbers: ``12`` and ``12.0`` are both ``12``.
    * Otherwise four significant digits, but the whole part is never rounded away:
      ``44.23943`` is ``44.24``, ``1.23456`` is ``1.235``, ``0.0123456`` is ``0.01235``,
      ``12345.678`` is ``12346``. Trailing zeros go (``2.50`` is ``2.5``).
    * No scientific notation from 10^-6 up to (not including) 10^9: ``1e-05`` is
      ``0.00001``, and ``14151.33`` (which ``%.4g`` printed as ``1.415e+04``) is ``14151``.
      Beyond those bounds fixed notation is a run of digits nobody counts right at 3 a.m.,
      so it is ``1.235e+09``, ``-2e+12``, ``1.5e-07`` (four significant digits, an exponent
      of at least two digits, as Go and C print it).
    * ``0`` and ``-0.0`` are ``0``; NaN and the infinities (which JSON cannot carry, but
      Grafana's ``valueString`` can) are ``NaN``, ``+Inf`` and ``-Inf``, as Grafana shows them.
    """
    if isinstance(value, int):
        if abs(value) < _LARGEST_FIXED:
            return str(value)
        return _scientific(f"{Decimal(value):.3e}")  # an int of any size: no float overflow
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    size = abs(value)
    if size >= _LARGEST_FIXED or size < _SMALLEST_FIXED:
        return _scientific(f"{value:.3e}")
    # the exponent after rounding to four digits: 999.96 counts as 1000, not 999
    exponent = int(f"{size:.3e}".partition("e")[2])
    text = f"{value:.{max(0, 3 - exponent)}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if len(text.lstrip("-")) > 9 and "." not in text:  # 999999999.7 rounded up to 10^9
        return _scientific(f"{value:.3e}")
    return text


def _scientific(text: str) -> str:
    """``1.230e+9`` or ``1.230e+09`` to ``1.23e+09``: no trailing zeros, two exponent digits."""
    mantissa, _, exponent = text.partition("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    power = int(exponent)
    return f"{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"


def number_text(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_number(value)
    return str(value)
