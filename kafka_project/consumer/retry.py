"""Retrying an action that fails transiently, and the simulated failure the demo retries."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


class TemporaryProcessingError(Exception):
    """A failure worth retrying."""


class PermanentFailure(Exception):
    """Every attempt failed; carries the last error and how many attempts were made."""

    def __init__(self, last_error: Exception, attempts: int) -> None:
        super().__init__(str(last_error))
        self.last_error = last_error
        self.attempts = attempts


@dataclass
class SimulatedFailures:
    """Fails a try with probability `rate`; a seeded rng makes a run repeatable."""

    rate: float
    rng: random.Random

    def maybe_fail(self) -> None:
        if self.rng.random() < self.rate:
            raise TemporaryProcessingError("Temporary processing failure")


@dataclass
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.1  # wait after failed attempt k: backoff_s * k (linear growth)

    def delay_after(self, attempt: int) -> float:
        return self.backoff_s * attempt

    def worst_case_s(self) -> float:
        """Time one order can spend waiting between its attempts."""
        return sum(self.delay_after(attempt) for attempt in range(1, self.max_attempts))


def call_with_retries(
    action: Callable[[], None],
    policy: RetryPolicy,
    on_failed_attempt: Callable[[int, Exception], None] = lambda attempt, exc: None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run `action` until it succeeds; return the attempts used, or raise PermanentFailure.

    Only TemporaryProcessingError is retried: anything else is a bug and propagates."""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            action()
            return attempt
        except TemporaryProcessingError as exc:
            on_failed_attempt(attempt, exc)
            if attempt == policy.max_attempts:
                raise PermanentFailure(exc, attempt) from exc
            sleep(policy.delay_after(attempt))
    raise AssertionError("unreachable: max_attempts must be at least 1")
