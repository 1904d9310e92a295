"""What the consumer has done so far, sampled a few times a second for the live view and the metrics."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from confluent_kafka import Consumer, KafkaException

from kafka_project import cluster
from kafka_project.consumer.processor import OrderProcessor

SAMPLE_EVERY_S = 0.25
RATE_WINDOW_S = 5.0  # orders/s is measured over about this long, so it settles instead of flickering


@dataclass(frozen=True)
class Status:
    processed: int = 0
    retries: int = 0
    dead_lettered: int = 0
    errors: int = 0
    total_price: Decimal = Decimal("0.00")
    average: Decimal = Decimal("0.00")
    orders_per_s: float = 0.0
    lag: int | None = None  # records in the assigned partitions not yet consumed; None = not known yet

    def line(self) -> str:
        lag = "?" if self.lag is None else str(self.lag)
        return (
            f"Status: processed={self.processed} retries={self.retries} dlq={self.dead_lettered} "
            f"errors={self.errors} rate={self.orders_per_s:.1f}/s avg={self.average} lag={lag}"
        )


def consumer_lag(consumer: Consumer) -> int | None:
    """High watermark minus position over the assigned partitions, from the watermarks the last
    fetches brought back (cached: no request to the broker)."""
    try:
        positions = consumer.position(consumer.assignment())
    except KafkaException:
        return None
    lag, known = 0, False
    for tp in positions:
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        if tp.offset >= 0 and high >= 0:
            lag += max(0, high - tp.offset)
            known = True
    return lag if known else None


class StatusSampler:
    """Turns the processor's counters into a Status at most every SAMPLE_EVERY_S.

    It runs on the consumer's own thread (between batches); other threads, such as the metrics
    server, only ever read `latest`, which is replaced whole, never changed in place.
    """

    def __init__(self, consumer: Consumer, processor: OrderProcessor) -> None:
        self.consumer = consumer
        self.processor = processor
        self.latest = Status()
        self.history: deque[tuple[float, int]] = deque()  # (when, orders done) over the rate window
        self.sampled_at = float("-inf")

    def sample(self, force: bool = False) -> Status | None:
        """A fresh Status if it is time for one (or forced), else None."""
        now = time.monotonic()
        if not force and now - self.sampled_at < SAMPLE_EVERY_S:
            return None
        self.sampled_at = now
        average = self.processor.running_average()
        done = average.count + self.processor.dead_lettered
        self.history.append((now, done))
        while len(self.history) > 2 and now - self.history[0][0] > RATE_WINDOW_S:
            self.history.popleft()
        since, done_then = self.history[0]
        self.latest = Status(
            processed=average.count,
            retries=self.processor.retries,
            dead_lettered=self.processor.dead_lettered,
            errors=self.processor.errors + cluster.client_error_count(),
            total_price=average.total_price,
            average=average.avg,
            # Never negative: an aborted transaction's rollback takes orders back off the count.
            orders_per_s=max(0.0, (done - done_then) / (now - since)) if now > since else 0.0,
            lag=consumer_lag(self.consumer),
        )
        return self.latest
