"""The retry policy, and the simulated failure the demo retries."""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field


class TemporaryProcessingError(Exception):
    """A failure worth retrying."""


@dataclass
class SimulatedFailures:
    """Fails a try with probability `rate`. With a seed, whether try k of an order fails depends
    only on the seed, the orderId and k: repeatable whatever order the tries run in. Each try
    takes `work_s` (the payment or stock call of a real service; 0 by default)."""

    rate: float
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random)
    work_s: float = 0.0

    def maybe_fail(self, order_id: str, attempt: int) -> None:
        if self.work_s:
            time.sleep(self.work_s)
        if self.rate and self.draw(order_id, attempt) < self.rate:
            raise TemporaryProcessingError("Temporary processing failure")

    def draw(self, order_id: str, attempt: int) -> float:
        if self.seed is None:
            return self.rng.random()
        digest = hashlib.blake2b(f"{self.seed}/{order_id}/{attempt}".encode(), digest_size=8).digest()
        return int.from_bytes(digest) / 2**64


@dataclass
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 0.1  # wait after failed attempt k: backoff_s * k (linear growth)

    def delay_after(self, attempt: int) -> float:
        return self.backoff_s * attempt

    def worst_case_s(self) -> float:
        """Time one order can spend waiting between its attempts."""
        return sum(self.delay_after(attempt) for attempt in range(1, self.max_attempts))
