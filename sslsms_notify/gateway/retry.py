"""When and how long to retry a gateway request (tenacity does the looping).

Retried: 4029, 4031, 5000, HTTP 5xx, transport failures, unreadable answers.
Never: 4001-4028 and 4030, which no amount of waiting fixes. The wait is
exponential with full jitter, or the gateway's ``Retry-After`` when it sends
one, and the whole thing is bounded both in attempts and in total time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tenacity
from tenacity.wait import wait_base

from .errors import GatewayError


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError) and exc.retryable


class _WaitRetryAfterOrJitter(wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.jitter = tenacity.wait_random_exponential(multiplier=policy.initial_delay, max=policy.max_delay)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(min(max(retry_after, 0.0), self.policy.max_delay))
        return float(self.jitter(retry_state))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard a client tries before it gives up on one request."""

    max_attempts: int = 4
    initial_delay: float = 0.2
    max_delay: float = 5.0
    #: No new attempt starts once this much time has passed since the first.
    total_timeout: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0 or self.total_timeout < 0:
            raise ValueError("retry delays and total_timeout must not be negative")

    @classmethod
    def none(cls) -> RetryPolicy:
        return cls(max_attempts=1)

    def capped(self, *, max_attempts: int, max_delay: float, total_timeout: float) -> RetryPolicy:
        """This policy, but never looser than the given bounds."""
        return RetryPolicy(
            max_attempts=min(self.max_attempts, max_attempts),
            initial_delay=min(self.initial_delay, max_delay),
            max_delay=min(self.max_delay, max_delay),
            total_timeout=min(self.total_timeout, total_timeout),
        )

    def tenacity_kwargs(self) -> dict[str, Any]:
        return {
            "stop": tenacity.stop_after_attempt(self.max_attempts)
            | tenacity.stop_before_delay(self.total_timeout),
            "wait": _WaitRetryAfterOrJitter(self),
            "retry": tenacity.retry_if_exception(is_retryable),
            "reraise": True,
        }
