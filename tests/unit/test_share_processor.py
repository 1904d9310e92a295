"""The share consumer's answers, without a broker: what is accepted, released, or left unanswered.

A stand-in consumer records the answers and a stand-in producer acknowledges (or not) what is
produced; the real broker runs in tests/faults/test_cluster_share_groups.py."""

import argparse
import threading
import time
from decimal import Decimal

from confluent_kafka import AcknowledgeType

from kafka_project.consumer.share_processor import ShareProcessor
from kafka_project.dlq.dlq_producer import DeadLetterPublisher
from kafka_project.order_codec import Order, OrderCodec

codec = OrderCodec()


class Record:
    """What the processor reads of a delivered record."""

    def __init__(self, offset: int, delivery: int, value: bytes | None = None) -> None:
        self._offset, self._delivery = offset, delivery
        self._value = (
            value if value is not None else codec.encode(Order(f"ORD-{offset}", "Tablet", Decimal("10.00")))
        )

    def value(self):
        return self._value

    def delivery_count(self):
        return self._delivery

    def error(self):
        return None

    def topic(self):
        return "orders"

    def partition(self):
        return 0

    def offset(self):
        return self._offset

    def key(self):
        return None

    def headers(self):
        return None

    def timestamp(self):
        return (1, 0)


class Answers:
    def __init__(self) -> None:
        self.given: dict[int, AcknowledgeType] = {}

    def acknowledge(self, msg, answer):
        self.given[msg.offset()] = answer


class Producer:
    """Acknowledges every record at the next flush, unless told not to."""

    def __init__(self, acknowledges: bool = True) -> None:
        self.acknowledges, self.pending = acknowledges, []

    def produce(self, topic, on_delivery, **_record):
        self.pending.append(on_delivery)

    def flush(self, timeout):
        if self.acknowledges:
            pending, self.pending = self.pending, []
            for callback in pending:
                callback(None, None)
        else:
            time.sleep(min(timeout, 0.05))
        return len(self.pending)


def processor(failure_rate: float, lock_s: float = 30.0, acknowledges: bool = True):
    args = argparse.Namespace(
        failure_rate=failure_rate,
        seed=1,
        work_time=0.0,
        max_attempts=3,
        retry_backoff=0.0,
        stats_topic="orders-stats",
        share_group="workers",
        quiet=True,
    )
    answers = Answers()
    dlq = DeadLetterPublisher(Producer(acknowledges), "orders-dlq", "workers")
    return ShareProcessor(answers, dlq, codec, args, "consumer-1", lock_s), answers


def test_a_stop_finishes_the_batch_in_hand_instead_of_releasing_it_untried():
    share, answers = processor(failure_rate=0.0)
    stop = threading.Event()
    stop.set()
    share.handle([Record(0, 1), Record(1, 3), Record(2, 5)], stop, time.monotonic())
    # Delivery 5 is past --max-attempts 3: dead-lettered at once, then accepted; the others counted.
    assert answers.given == {0: AcknowledgeType.ACCEPT, 1: AcknowledgeType.ACCEPT, 2: AcknowledgeType.ACCEPT}
    assert (share.aggregate.count, share.dead_lettered, share.published_count) == (2, 1, 2)


def test_failed_tries_are_released_and_the_last_one_is_dead_lettered_then_accepted():
    share, answers = processor(failure_rate=1.0)
    share.handle([Record(0, 1), Record(1, 2), Record(2, 3)], threading.Event(), time.monotonic())
    assert answers.given == {
        0: AcknowledgeType.RELEASE,
        1: AcknowledgeType.RELEASE,
        2: AcknowledgeType.ACCEPT,
    }
    assert share.dead_lettered == 1


def test_past_half_the_lock_untried_records_are_released_but_not_those_at_their_last_try():
    share, answers = processor(failure_rate=0.0, lock_s=10.0)
    polled_long_ago = time.monotonic() - 6.0
    share.handle([Record(0, 1), Record(1, 3)], threading.Event(), polled_long_ago)
    assert answers.given == {0: AcknowledgeType.RELEASE, 1: AcknowledgeType.ACCEPT}
    assert share.aggregate.count == 1


def test_nothing_is_accepted_whose_count_or_dlq_copy_the_broker_does_not_hold():
    share, answers = processor(failure_rate=0.0, lock_s=0.3, acknowledges=False)
    stop = threading.Event()
    stop.set()  # stopping: what is not held is left for close() to hand back
    share.handle([Record(0, 1), Record(1, 1, value=b"not an order")], stop, time.monotonic())
    assert answers.given == {}
    # Not stopping, the next poll needs every record answered: after the lock, released.
    share, answers = processor(failure_rate=0.0, lock_s=0.3, acknowledges=False)
    share.handle([Record(0, 1), Record(1, 1, value=b"not an order")], threading.Event(), time.monotonic())
    assert answers.given == {0: AcknowledgeType.RELEASE, 1: AcknowledgeType.RELEASE}
