"""The share consumer's answers, without a broker: what is accepted, released, or left unanswered.

A stand-in consumer records the answers and a stand-in producer acknowledges (or not) what is
produced; the real broker runs in tests/faults/test_cluster_share_groups.py."""

import argparse
import threading
import time
from decimal import Decimal

from confluent_kafka import AcknowledgeType

from kafka_project.consumer.share_group import ShareGroupLimits
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

    def __len__(self):
        return len(self._value)

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
        self.acknowledges, self.pending, self.produced = acknowledges, [], []

    def produce(self, topic, on_delivery, **record):
        self.produced.append(record)
        self.pending.append(on_delivery)

    def flush(self, timeout):
        if self.acknowledges:
            pending, self.pending = self.pending, []
            for callback in pending:
                callback(None, None)
        else:
            time.sleep(min(timeout, 0.05))
        return len(self.pending)


def processor(failure_rate: float, lock_s: float = 30.0, acknowledges: bool = True, backoff_s: float = 0.0):
    args = argparse.Namespace(
        failure_rate=failure_rate,
        seed=1,
        work_time=0.0,
        max_attempts=3,
        retry_backoff=backoff_s,
        stats_topic="orders-stats",
        share_group="workers",
        quiet=True,
    )
    answers = Answers()
    dlq = DeadLetterPublisher(Producer(acknowledges), "orders-dlq", "workers")
    limits = ShareGroupLimits(delivery_limit=5, lock_duration_s=lock_s, heartbeat_s=5.0)
    return ShareProcessor(answers, dlq, codec, args, "consumer-1", limits), answers


def dlq_headers(share: ShareProcessor) -> list[dict]:
    return [dict(record["headers"]) for record in share.dlq.producer.produced if "headers" in record]


def test_a_stop_finishes_the_batch_in_hand_instead_of_releasing_it_untried():
    share, answers = processor(failure_rate=0.0)
    stop = threading.Event()
    stop.set()
    share.handle([Record(0, 1), Record(1, 3), Record(2, 5)], stop, time.monotonic())
    # Delivery 5 is the group's last: dead-lettered untried, then accepted; the others counted.
    assert answers.given == {0: AcknowledgeType.ACCEPT, 1: AcknowledgeType.ACCEPT, 2: AcknowledgeType.ACCEPT}
    assert (share.aggregate.count, share.dead_lettered, share.published_count) == (2, 1, 2)
    assert [h["dlq.error.type"] for h in dlq_headers(share)] == [b"TriesUsedUp"]


def test_an_order_gets_all_its_tries_in_any_delivery_before_the_last():
    """Deliveries 2-4 follow deliveries cut short (a consumer's death): each still gets 3 tries,
    spaced by the backoff, and only then goes to the DLQ (dlq.attempts 3); the 5th is not tried."""
    share, answers = processor(failure_rate=1.0, backoff_s=0.05)
    started = time.monotonic()
    share.handle([Record(0, 1), Record(1, 2), Record(2, 4), Record(3, 5)], threading.Event(), started)
    assert time.monotonic() - started >= 0.05 + 0.10  # the waits after tries 1 and 2
    assert answers.given == dict.fromkeys(range(4), AcknowledgeType.ACCEPT)
    assert share.retries == 3 * 2
    copies = {h["dlq.original.offset"]: (h["dlq.attempts"], h["dlq.error.type"]) for h in dlq_headers(share)}
    assert copies == {
        b"0": (b"3", b"TemporaryProcessingError"),
        b"1": (b"3", b"TemporaryProcessingError"),
        b"2": (b"3", b"TemporaryProcessingError"),
        b"3": (b"0", b"TriesUsedUp"),
    }


def test_a_failed_try_is_tried_again_in_the_same_delivery_and_counted_when_it_succeeds():
    share, answers = processor(failure_rate=0.3)
    records = [Record(offset, 1) for offset in range(200)]
    share.handle(records, threading.Event(), time.monotonic())
    assert set(answers.given.values()) == {AcknowledgeType.ACCEPT}
    assert share.aggregate.count + share.dead_lettered == 200
    assert share.retries > 0


def test_past_half_the_lock_untried_records_are_released_but_not_those_at_the_last_delivery():
    share, answers = processor(failure_rate=0.0, lock_s=10.0)
    polled_long_ago = time.monotonic() - 6.0
    share.handle([Record(0, 1), Record(1, 4), Record(2, 5)], threading.Event(), polled_long_ago)
    released, accepted = AcknowledgeType.RELEASE, AcknowledgeType.ACCEPT
    assert answers.given == {0: released, 1: released, 2: accepted}
    assert (share.aggregate.count, share.dead_lettered) == (0, 1)


def test_an_order_whose_next_try_would_outlive_half_the_lock_is_released_for_a_fresh_delivery():
    share, answers = processor(failure_rate=1.0, lock_s=0.4, backoff_s=0.15)
    share.handle([Record(0, 1)], threading.Event(), time.monotonic())
    # Try 1 fails, try 2 at 0.15 s fails, try 3 would come at 0.45 s: past 0.2 s, so released.
    assert answers.given == {0: AcknowledgeType.RELEASE}
    assert share.dead_lettered == 0


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


class ReplayedRecord(Record):
    def __init__(self, offset: int, for_group: str) -> None:
        super().__init__(offset, 1)
        self.for_group = for_group

    def headers(self):
        return [("dlq.replay.count", b"1"), ("dlq.replay.group", self.for_group.encode())]


def test_a_record_replayed_for_another_group_is_accepted_without_counting_it():
    """Replay writes to the shared source topic: only the group that dead-lettered it counts it."""
    share, answers = processor(failure_rate=0.0)
    records = [ReplayedRecord(0, "order-consumer"), ReplayedRecord(1, "workers")]
    share.handle(records, threading.Event(), time.monotonic())
    assert answers.given == {0: AcknowledgeType.ACCEPT, 1: AcknowledgeType.ACCEPT}
    assert (share.aggregate.count, share.dead_lettered) == (1, 0)  # only the one replayed for "workers"
