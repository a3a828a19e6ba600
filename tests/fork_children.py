"""What the children of tests/test_fork.py run (importable by a spawned child: no pytest here)."""

from __future__ import annotations

from sslsms_notify import GatewayClient, Notifier, RetryPolicy
from sslsms_notify.alerting import DispatchPolicy

PHONE = "01711111111"
QUICK = RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.1, total_timeout=5)
#: what close() gets when a child ends: generous, for a busy 2-core machine
CLOSE_AT_EXIT = 20.0


def notifier_for(base_url: str, token: str, sid: str, store: str) -> Notifier:
    client = GatewayClient(token, sid, base_url=base_url, retry=QUICK, timeout=5)
    return Notifier(
        client,
        recipients=[PHONE],
        store=store,
        per_recipient_limit=None,
        close_at_exit=CLOSE_AT_EXIT,
        dispatch=DispatchPolicy(tps=1000, backoff=0.05, max_backoff=0.5, lease=5),
    )


def child_texts(index: int, count: int) -> list[str]:
    return [f"child {index} alert {j}" for j in range(count)]


def raise_alerts(notifier: Notifier, index: int, count: int) -> None:
    for text in child_texts(index, count):
        if not notifier.alert(text, key=text):
            raise RuntimeError(f"{text!r} was dropped")


def inherited_child(notifier: Notifier, index: int, count: int) -> None:
    """A ``multiprocessing`` fork child: alerts on the notifier it inherited, and just returns.

    Nothing closes the notifier here: the child ends with os._exit(), and only the
    notifier's exit hook can deliver what it accepted.
    """
    raise_alerts(notifier, index, count)


def spawned_child(base_url: str, token: str, sid: str, store: str, index: int, count: int) -> None:
    """A ``multiprocessing`` spawn child: a notifier of its own, alerts, and returns."""
    raise_alerts(notifier_for(base_url, token, sid, store), index, count)
