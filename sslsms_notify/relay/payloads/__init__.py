"""Webhook bodies to :class:`AlertSpec` lists, for the HTTP relay (``sslsms-notify serve``).

Pure (no I/O, no web framework), so the HTTP layer stays thin and every rule here is
tested on plain data. Three kinds of body:

* our own API: :func:`parse_alerts`;
* Prometheus Alertmanager's webhook, payload version "4": :func:`parse_alertmanager`;
* Grafana's webhook contact point, unified alerting and legacy: :func:`parse_grafana`.

A refused body raises :class:`PayloadError`: the dotted path of the bad field, a rule a
person can act on, and the HTTP status to answer (400: not JSON or not the right kind
of document; 422: a well-formed body with a bad value). Error messages repeat at most
60 characters of any value and mask anything that looks like a credential.

Alertmanager and Grafana retry 5xx answers but not 4xx, so a refused webhook is a lost
page. The webhook parsers are therefore strict only where a wrong guess would misroute
or mis-deduplicate (labels, status, fingerprint, receiver) and lenient where it would
only change the wording (annotations, values, evalMatches). A Grafana alert with no
``labels`` at all is read as one with empty labels rather than refused.

Texts pass through :func:`~sslsms_notify.gateway.clean.clean_text` (no escapes, control
or bidirectional characters), then have their whitespace folded to single spaces.

Facts about Alertmanager this relies on (seen from Alertmanager 0.25, see
``tests/data/alertmanager_*.json``):

* every notification carries *all* alerts of its group: the ones still firing come
  again whenever the group changes (an alert joins or resolves) and at its
  ``repeat_interval``. Each spec therefore carries its **lifecycle**,
  ``am:{fingerprint}@{startsAt}``: the pipeline pages an alert once per lifecycle while
  it fires and once when it resolves, and a re-send is nothing new (no SMS, no "+N
  more"), however long after. An alert that fires again gets a new ``startsAt``: a new
  lifecycle. Without ``startsAt`` the key ``am:{fingerprint}:{status}`` and the dedup
  window decide, as for any other alert;
* the top-level ``status`` is "firing" while any alert of the group fires; only each
  alert's own ``status`` counts;
* ``receiver`` goes through Go's ``regexp.QuoteMeta`` (``sms.relay`` arrives as
  ``sms\\.relay``); we undo that for the SMS origin.
"""

from __future__ import annotations

from ...severity import SEVERITIES
from .api import parse_alerts
from .common import _ALIASES, AlertSpec, PayloadError, decode_body
from .options import DEFAULT_SEVERITY_MAP, WebhookOptions
from .texts import format_number
from .webhook import labels_fingerprint, parse_alertmanager, parse_grafana

__all__ = [
    "DEFAULT_SEVERITY_MAP",
    "SEVERITIES",
    "_ALIASES",
    "AlertSpec",
    "PayloadError",
    "WebhookOptions",
    "decode_body",
    "format_number",
    "labels_fingerprint",
    "parse_alertmanager",
    "parse_alerts",
    "parse_grafana",
]
