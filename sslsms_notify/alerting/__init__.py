"""The alert pipeline: alerts, routing, dedup, throttling, dispatch, and the Notifier."""

from .alert import Alert, Severity
from .dispatch import DispatchPolicy
from .notifier import Notifier
from .routing import Route, Router

__all__ = ["Alert", "DispatchPolicy", "Notifier", "Route", "Router", "Severity"]
