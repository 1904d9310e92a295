"""The consumer's pure parts: retry policy, running average, commit positions."""

import itertools
import random
import time
from decimal import Decimal

import pytest
from confluent_kafka import KafkaError, KafkaException

from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.consumer import batch_size_for
from kafka_project.consumer.exactly_once import retry_retriable
from kafka_project.consumer.offsets import OffsetTracker
from kafka_project.consumer.retry import (
    PermanentFailure,
    RetryPolicy,
    SimulatedFailures,
    TemporaryProcessingError,
    call_with_retries,
)


def run_seeded(rate: float, seed: int, orders: int) -> list[int | None]:
    """Attempts used per order (None = permanent failure), as the consumer runs them."""
    failures = SimulatedFailures(rate, random.Random(seed))
    results: list[int | None] = []
    for _ in range(orders):
        try:
            results.append(call_with_retries(failures.maybe_fail, RetryPolicy(3, 0), sleep=lambda s: None))
        except PermanentFailure as exc:
            assert exc.attempts == 3
            results.append(None)
    return results


def test_seeded_failures_repeat_exactly():
    assert run_seeded(0.3, 7, 500) == run_seeded(0.3, 7, 500)
    assert run_seeded(0.3, 7, 500) != run_seeded(0.3, 8, 500)


class Draws(random.Random):
    """A random source that returns the given draws, to test the threshold itself."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__()
        self.draws = iter(draws)

    def random(self) -> float:
        return next(self.draws)


def test_a_try_fails_exactly_when_the_draw_is_below_the_rate():
    failures = SimulatedFailures(0.3, Draws([0.0, 0.2999, 0.3, 0.9999]))
    outcomes = []
    for _ in range(4):
        try:
            failures.maybe_fail()
            outcomes.append("ok")
        except TemporaryProcessingError:
            outcomes.append("failed")
    assert outcomes == ["failed", "failed", "ok", "ok"]


def test_an_order_goes_to_the_dlq_only_when_all_three_tries_fail():
    def attempts(draws: list[float]) -> int | None:
        failures = SimulatedFailures(0.3, Draws(draws))
        try:
            return call_with_retries(failures.maybe_fail, RetryPolicy(3, 0), sleep=lambda s: None)
        except PermanentFailure as exc:
            return None if exc.attempts == 3 else -1

    assert attempts([0.5]) == 1
    assert attempts([0.1, 0.5]) == 2
    assert attempts([0.1, 0.1, 0.5]) == 3
    assert attempts([0.1, 0.1, 0.1]) is None


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 1), (1.0, None)])
def test_rate_zero_never_fails_and_one_always_fails(rate, expected):
    assert set(run_seeded(rate, 3, 100)) == {expected}


def test_backoff_grows_per_attempt_and_failures_are_reported():
    slept, reported = [], []
    failures = iter([True, True, False])

    def action():
        if next(failures):
            raise TemporaryProcessingError("boom")

    attempts = call_with_retries(
        action, RetryPolicy(3, 0.5), lambda k, exc: reported.append((k, str(exc))), slept.append
    )
    assert attempts == 3
    assert slept == [0.5, 1.0]
    assert reported == [(1, "boom"), (2, "boom")]


def test_other_errors_are_not_retried():
    calls = []

    def action():
        calls.append(1)
        raise KeyError("bug")

    with pytest.raises(KeyError):
        call_with_retries(action, RetryPolicy(3, 0), sleep=lambda s: None)
    assert len(calls) == 1


def test_running_average_is_exact_to_the_cent():
    average = RunningAverage()
    assert average.avg == Decimal("0.00")
    for price in ["294.48", "995.01"]:
        average.add(Decimal(price))
    assert average.total_price == Decimal("1289.49")
    assert average.avg == Decimal("644.75")  # 644.745 rounds half up
    assert str(average) == "Running Average: $644.75 (Total: $1289.49, Count: 2)"


def test_float_would_drift_but_decimal_does_not():
    average = RunningAverage()
    for _ in range(1000):
        average.add(Decimal("0.10"))
    assert average.total_price == Decimal("100.00")
    assert sum([0.10] * 1000) != 100.0


def test_commit_position_is_the_lowest_record_not_done():
    tracker, key = OffsetTracker(), ("orders", 0)
    assert tracker.commit_position(key) is None
    tracker.received(key, 0)
    assert tracker.commit_position(key) == 0  # received is not done
    tracker.done(key, 0)
    assert tracker.commit_position(key) == 1
    for offset in (1, 2, 3):
        tracker.received(key, offset)
    tracker.done(key, 2)  # done above a record that is not: the position stays at 1
    assert tracker.commit_position(key) == 1
    tracker.done(key, 1)
    assert tracker.commit_position(key) == 3
    tracker.done(key, 3)
    assert tracker.commit_position(key) == 4


def test_an_interrupted_record_holds_the_position_even_after_later_acknowledgements():
    """The review's loss: order 0 on its way to the DLQ, order 1 interrupted mid-retry (never
    done); order 0's acknowledgement must not move the position past order 1."""
    tracker, key = OffsetTracker(), ("orders", 0)
    tracker.received(key, 0)
    tracker.received(key, 1)
    tracker.done(key, 0)  # the DLQ acknowledgement served by the final flush
    assert tracker.commit_position(key) == 1


def test_offsets_with_gaps_commit_past_the_gap():
    tracker, key = OffsetTracker(), ("orders", 0)
    tracker.received(key, 10)  # e.g. after a transaction marker or compaction
    tracker.done(key, 10)
    tracker.received(key, 12)
    tracker.done(key, 12)
    assert tracker.commit_position(key) == 13


def test_revoked_partitions_are_forgotten():
    tracker = OffsetTracker()
    tracker.received(("orders", 0), 5)
    tracker.received(("orders", 1), 9)
    tracker.done(("orders", 1), 9)
    tracker.forget([("orders", 0)])
    tracker.done(("orders", 0), 5)  # a late acknowledgement is harmless
    assert tracker.commit_position(("orders", 0)) is None
    assert tracker.commit_position(("orders", 1)) == 10


@pytest.mark.parametrize(
    ("attempts", "backoff", "worst_case", "batch"),
    [(3, 0.1, 0.3, 33), (3, 0.0, 0.0, 500), (1, 5.0, 0.0, 500), (4, 0.5, 3.0, 3), (5, 1.0, 10.0, 1)],
)
def test_records_per_poll_keep_retry_time_between_polls_bounded(attempts, backoff, worst_case, batch):
    policy = RetryPolicy(attempts, backoff)
    assert policy.worst_case_s() == pytest.approx(worst_case)
    assert batch_size_for(policy) == batch


def test_retriable_transactional_calls_pause_between_tries_and_give_up_in_time():
    calls: list[float] = []

    def always_retriable() -> None:
        calls.append(time.monotonic())
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "coordinator busy", retriable=True))

    started = time.monotonic()
    with pytest.raises(KafkaException):
        retry_retriable(always_retriable, timeout_s=1.0)
    assert time.monotonic() - started <= 1.1
    assert 3 <= len(calls) <= 6  # 0.05, 0.1, 0.2, 0.4 s pauses: not a busy loop
    assert all(later - earlier >= 0.04 for earlier, later in itertools.pairwise(calls))


def test_non_retriable_transactional_errors_are_raised_at_once():
    calls = []

    def fatal() -> None:
        calls.append(1)
        raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    with pytest.raises(KafkaException):
        retry_retriable(fatal)
    assert calls == [1]


def test_records_done_behind_a_slow_one_do_not_pile_up():
    """A DLQ copy stuck for a long time while 100,000 later orders are counted: the position stays
    at the stuck record, and the tracker holds about what is pending, not everything done."""
    tracker, key = OffsetTracker(), ("orders", 0)
    tracker.received(key, 0)  # its DLQ copy is not acknowledged
    for offset in range(1, 100_001):
        tracker.received(key, offset)
        tracker.done(key, offset)
        assert tracker.commit_position(key) == 0
    assert len(tracker._lowest[key]) <= 2 * 1 + 64 + 1
    tracker.done(key, 0)
    assert tracker.commit_position(key) == 100_001
