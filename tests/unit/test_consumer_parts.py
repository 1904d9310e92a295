"""The consumer's pure parts: retry policy, running average, commit positions."""

import random
import threading
import time
from decimal import Decimal

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from kafka_project.consumer import consumer, exactly_once
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.exactly_once import PRODUCER_BLOCKED, call_with_deadline, retry_retriable
from kafka_project.consumer.offsets import OffsetTracker
from kafka_project.consumer.processor import JOIN_GRACE_S, OrderProcessor
from kafka_project.consumer.retry import RetryPolicy, SimulatedFailures, TemporaryProcessingError
from kafka_project.consumer.schedule import RetrySchedule, Work, lane_of
from kafka_project.order_codec import Order, OrderCodec


class Draws(random.Random):
    """A random source that returns the given draws, to test the threshold itself."""

    def __init__(self, draws: list[float]) -> None:
        super().__init__()
        self.draws = iter(draws)

    def random(self) -> float:
        return next(self.draws)


def test_a_try_fails_exactly_when_the_draw_is_below_the_rate():
    failures = SimulatedFailures(0.3, rng=Draws([0.0, 0.2999, 0.3, 0.9999]))
    outcomes = []
    for _ in range(4):
        try:
            failures.maybe_fail("ORD-1", 1)
            outcomes.append("ok")
        except TemporaryProcessingError:
            outcomes.append("failed")
    assert outcomes == ["failed", "failed", "ok", "ok"]


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
    tracker.held(key, 0)
    assert tracker.commit_position(key) == 0  # held is not done
    tracker.done(key, 0)
    assert tracker.commit_position(key) == 1
    tracker.done(key, 1)  # done while handled, never held (the first try succeeded)
    assert tracker.commit_position(key) == 2
    for offset in (1, 2, 3):
        tracker.held(key, offset)
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
    tracker.held(key, 0)
    tracker.held(key, 1)
    tracker.released(key, 0)  # the DLQ acknowledgement served by the final flush
    assert tracker.commit_position(key) == 1


def test_a_record_being_handled_holds_the_position_without_being_held():
    """Records of a partition are handled in offset order: until record 3 is done (or left
    waiting), the position cannot pass it, whatever interrupts its handling."""
    tracker, key = OffsetTracker(), ("orders", 0)
    tracker.done(key, 0)
    tracker.held(key, 1)  # waiting for a retry
    tracker.done(key, 2)
    # record 3: an exception or Ctrl-C here, before done(): the position stays below it
    assert tracker.commit_position(key) == 1
    tracker.done(key, 1)
    assert tracker.commit_position(key) == 3


def test_offsets_with_gaps_commit_past_the_gap():
    tracker, key = OffsetTracker(), ("orders", 0)
    tracker.held(key, 10)  # e.g. after a transaction marker or compaction
    tracker.done(key, 10)
    tracker.held(key, 12)
    tracker.done(key, 12)
    assert tracker.commit_position(key) == 13


def test_revoked_partitions_are_forgotten():
    tracker = OffsetTracker()
    tracker.held(("orders", 0), 5)
    tracker.held(("orders", 1), 9)
    tracker.done(("orders", 1), 9)
    tracker.forget([("orders", 0)])
    tracker.released(("orders", 0), 5)  # a late acknowledgement is harmless
    assert tracker.commit_position(("orders", 0)) is None
    assert tracker.commit_position(("orders", 1)) == 10


class FakeClock:
    """time.monotonic and time.sleep for code whose timing is the thing tested: a sleep moves
    the clock, so the test reads the schedule, not a loaded machine's scheduler."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_retriable_transactional_calls_pause_between_tries_and_give_up_in_time(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(exactly_once, "time", clock)
    calls: list[float] = []

    def always_retriable() -> None:
        calls.append(clock.monotonic())
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "coordinator busy", retriable=True))

    with pytest.raises(KafkaException):
        retry_retriable(always_retriable, timeout_s=1.0)
    # Pauses of 0.05, 0.1, 0.2 and 0.4 s; the next (0.8 s) would end past the deadline: it gives up.
    assert calls == pytest.approx([0.0, 0.05, 0.15, 0.35, 0.75])


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
    tracker.held(key, 0)  # its DLQ copy is not acknowledged
    for offset in range(1, 100_001):
        tracker.held(key, offset)
        tracker.done(key, offset)
        assert tracker.commit_position(key) == 0
    assert len(tracker._lowest[key]) <= 2 * 1 + 64 + 1
    tracker.done(key, 0)
    assert tracker.commit_position(key) == 100_001


def work(offset: int, key: bytes | int, partition: int = 0) -> Work:
    order = Order(f"ORD-{offset}", "Phone", Decimal("1.00"))
    record = Message(topic="orders", partition=partition, offset=offset, value=b"x" * (10 + offset))
    return Work(record, order, ("orders", partition), offset, ("orders", partition, key))


def test_a_waiting_order_holds_back_only_its_own_key():
    schedule = RetrySchedule()
    first, same_key, other_key = work(0, b"alice"), work(1, b"alice"), work(2, b"bob")
    schedule.add(first, due_at=10.0)  # failed its first try: due again at t=10
    assert schedule.busy(first.lane) and not schedule.busy(other_key.lane)
    schedule.add(same_key, due_at=0.0)  # queued behind it, whatever its own due time
    assert schedule.pop_due(now=5.0) is None
    assert schedule.seconds_to_next(now=5.0) == 5.0
    assert schedule.pop_due(now=10.0) is first
    schedule.finished(first, now=10.0)
    assert schedule.pop_due(now=10.0) is same_key  # next of its key, due at once
    schedule.finished(same_key, now=10.0)
    assert schedule.size == 0 and not schedule.busy(first.lane)


def test_retries_come_back_in_due_order_and_dropped_partitions_are_forgotten():
    schedule = RetrySchedule()
    late, early, revoked = work(0, b"a"), work(1, b"b"), work(2, b"c", partition=1)
    schedule.add(late, due_at=3.0)
    schedule.add(early, due_at=1.0)
    schedule.add(revoked, due_at=0.5)
    assert schedule.bytes == 10 + 11 + 12  # the record values in progress
    schedule.drop({("orders", 1)})
    assert schedule.size == 2 and schedule.bytes == 10 + 11
    assert [schedule.pop_due(now=9.0), schedule.pop_due(now=9.0)] == [early, late]
    schedule.try_again(late, due_at=12.0)
    assert schedule.pop_due(now=11.9) is None and schedule.pop_due(now=12.0) is late
    schedule.finished(late, now=12.0)
    schedule.finished(early, now=12.0)
    assert schedule.size == 0 and schedule.bytes == 0


def test_an_order_done_at_its_first_try_never_enters_the_schedule():
    schedule = RetrySchedule()
    schedule.finished(work(0, b"a"), now=0.0)  # harmless: nothing queued
    assert schedule.size == 0 and schedule.seconds_to_next(now=0.0) is None


def test_a_seed_decides_each_try_of_each_order_whatever_order_they_run_in():
    def outcomes(seed: int, order_ids: list[str]) -> dict[tuple[str, int], bool]:
        failures = SimulatedFailures(0.3, seed)
        return {(o, k): failures.draw(o, k) < 0.3 for o in order_ids for k in (1, 2, 3)}

    ids = [f"ORD-{n}" for n in range(2000)]
    assert outcomes(7, ids) == outcomes(7, list(reversed(ids)))
    assert outcomes(7, ids) != outcomes(8, ids)
    failed = sum(outcomes(7, ids).values()) / (3 * len(ids))
    assert 0.27 < failed < 0.33  # about the rate


def test_a_transactional_call_blocked_past_its_deadline_gives_the_producer_up():
    """librdkafka's send_offsets_to_transaction() can block past its timeout: the caller gets a
    fatal error after the deadline (and starts over with a new producer), not a hang."""
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(KafkaException) as raised:
        call_with_deadline(lambda: release.wait(10), deadline_s=0.3)
    given_up_after = time.monotonic() - started
    release.set()
    assert 0.3 <= given_up_after < 10  # after its deadline, while the call was still blocked
    error = raised.value.args[0]
    assert error.fatal() and error.code() == PRODUCER_BLOCKED
    with pytest.raises(KeyError):  # errors of a call that returns in time are the caller's
        call_with_deadline(lambda: {}["missing"], deadline_s=1.0)


def test_a_record_delivered_again_below_the_highest_keeps_the_position():
    """After a seek back (a registry wait, a retry re-read), done() of a lower offset must not pull
    the position back below what was already done."""
    tracker, key = OffsetTracker(), ("orders", 0)
    tracker.done(key, 5)
    tracker.done(key, 3)
    assert tracker.commit_position(key) == 6
    tracker.held(key, 4)
    tracker.released(key, 4)
    assert tracker.commit_position(key) == 6


def test_a_forgotten_partition_leaves_nothing_behind_and_may_never_have_been_seen():
    tracker, key = OffsetTracker(), ("orders", 0)
    tracker.held(key, 5)
    tracker.forget([key, ("orders", 7)])  # partition 7 was assigned but received nothing
    assert (tracker._next, tracker._pending, tracker._lowest) == ({}, {}, {})


@pytest.mark.parametrize(("count", "total"), [(0, "0.00"), (1, "100000.00"), (1, "0" * 36 + "1.00")])
def test_a_restored_aggregate_at_each_bound_is_read(count, total):
    assert RunningAverage.restored(count, total) == RunningAverage(count, Decimal(total))


@pytest.mark.parametrize(
    ("count", "total", "message"),
    [
        ("3", "1.00", "^count '3' is not a whole number$"),
        (-1, "1.00", "^count -1 is not a whole number$"),
        (True, "1.00", "^count True is not a whole number$"),
        (1, 1.0, "^total is not a decimal string$"),
        (1, "0" * 37 + "1.00", "^total is not a decimal string$"),  # 41 characters
        (1, "100000.01", r"^total '100000.01' is not a sum of 1 prices$"),
        (1, "1.001", r"^total '1.001' is not a sum of 1 prices$"),
        (3, "-1.50", r"^total '-1.50' is not a sum of 3 prices$"),
    ],
)
def test_a_restored_aggregate_this_program_could_not_have_written_is_refused(count, total, message):
    with pytest.raises(ValueError, match=message):
        RunningAverage.restored(count, total)


def test_each_try_takes_the_work_time_and_fails_with_the_seed_s_draw(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    failures = SimulatedFailures(0.3, seed=7, work_s=0.25)
    for attempt in (1, 2, 3):
        expected_failure = failures.draw("ORD-9", attempt) < 0.3
        try:
            failures.maybe_fail("ORD-9", attempt)
            failed = False
        except TemporaryProcessingError as exc:
            assert str(exc) == "Temporary processing failure"  # the seed's sample output says this
            failed = True
        assert failed == expected_failure
    assert slept == [0.25] * 3
    assert {failures.draw("ORD-9", k) for k in (1, 2, 3)} != {failures.draw("ORD-9", 1)}


def test_the_worst_case_wait_is_the_backoffs_between_tries():
    assert RetryPolicy(3, 0.1).worst_case_s() == pytest.approx(0.1 + 0.2)
    assert RetryPolicy(5, 2.0).worst_case_s() == pytest.approx(2 + 4 + 6 + 8)
    assert RetryPolicy(1, 2.0).worst_case_s() == 0


def test_keyed_orders_share_a_lane_and_each_keyless_order_has_its_own():
    alice = Message(topic="orders", partition=2, offset=5, key=b"alice", value=b"x")
    keyless = Message(topic="orders", partition=2, offset=6, value=b"x")
    assert lane_of(alice, ("orders", 2), 5) == ("orders", 2, b"alice")
    assert lane_of(keyless, ("orders", 2), 6) == ("orders", 2, 6)


def test_the_wait_to_the_next_retry_is_exact_and_never_negative():
    schedule = RetrySchedule()
    schedule.add(work(0, b"a"), due_at=10.0)
    assert schedule.seconds_to_next(now=9.5) == 0.5
    assert schedule.seconds_to_next(now=11.0) == 0.0


@pytest.mark.parametrize("group_protocol", ["classic", "classic-cooperative"])
def test_the_join_grace_starts_at_each_eager_revoke_not_at_the_start(monkeypatch, group_protocol):
    """--idle-timeout does not count while the consumer (re)joins, for JOIN_GRACE_S: from the
    eager revoke that starts a join, however long the consumer has run; a cooperative revoke
    starts none."""
    clock = FakeClock()
    monkeypatch.setattr(time, "monotonic", clock.monotonic)
    args = consumer.parse_args(["--bootstrap-servers", "localhost:1", "--group-protocol", group_protocol])
    kafka_consumer = Consumer({"bootstrap.servers": "localhost:1", "group.id": "grace"})
    try:
        processor = consumer.make_processor(kafka_consumer, OrderCodec(), args)
        assert processor.joining()
        OrderProcessor.on_assign(processor, kafka_consumer, [])
        assert not processor.joining()
        clock.now += 100  # long after the start
        OrderProcessor.on_revoke(processor, kafka_consumer, [])
        assert processor.joining() == (group_protocol == "classic")
        clock.now += JOIN_GRACE_S
        assert not processor.joining()  # no join came: a deleted topic, say
    finally:
        kafka_consumer.close()
