"""What the consumer does with each record: decode, process with retries, then count it or dead-letter it.

`OrderProcessor` holds the logic both delivery modes share; `AtLeastOnceProcessor` commits through
stored offsets. The exactly-once variant lives in exactly_once.py.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.offsets import OffsetTracker, PartitionKey
from kafka_project.consumer.retry import PermanentFailure, RetryPolicy, SimulatedFailures, call_with_retries
from kafka_project.dlq.dlq_producer import DeadLetterPublisher
from kafka_project.dlq.headers import describe
from kafka_project.errors import UserError
from kafka_project.order_codec import Order, OrderCodec, OrderDecodeError

FLUSH_TIMEOUT_S = 30.0


def partition_key(msg: Message | TopicPartition) -> PartitionKey:
    if isinstance(msg, TopicPartition):
        return msg.topic, msg.partition
    topic, partition = msg.topic(), msg.partition()
    assert topic is not None and partition is not None  # set on every consumed record
    return topic, partition


def offset_of(msg: Message) -> int:
    offset = msg.offset()
    assert offset is not None  # set on every consumed record
    return offset


class OrderProcessor:
    """Decode, retry, count or dead-letter: the part of the consumer both delivery modes share."""

    def __init__(
        self, consumer: Consumer, dlq: DeadLetterPublisher, codec: OrderCodec, args: argparse.Namespace
    ) -> None:
        self.consumer = consumer
        self.dlq = dlq
        self.codec = codec
        self.failures = SimulatedFailures(args.failure_rate, random.Random(args.seed))
        self.policy = RetryPolicy(args.max_attempts, args.retry_backoff)
        # Quiet runs skip formatting the per-order lines altogether: it costs more than decoding.
        self.verbose = not args.quiet
        self.say: Callable[[str], None] = print if self.verbose else (lambda _line: None)
        self.retries = 0
        self.dead_lettered = 0
        self.errors = 0  # consume errors and aborted transactions (client errors are counted in cluster)
        # Called after every record, e.g. to refresh the live view in the middle of a slow batch.
        self.after_each_record: Callable[[], None] = lambda: None
        # The partitions this consumer owns now; a record polled before its partition was revoked
        # (consume() can run on_revoke after poll() returned it) belongs to the new owner.
        self.assigned: set[PartitionKey] = set()
        # Between a revoke and the next assignment the consumer is (re)joining the group, which is
        # not idleness; once assigned, even nothing, --idle-timeout counts.
        self.joined = False
        self.rebalances = 0  # rebalance callbacks run so far: a batch polled across one is suspect
        self.finished = False  # finish() ran: close()'s revoke has nothing left to wait for

    # -- the per-record logic -------------------------------------------------------------
    def handle(self, msg: Message) -> None:
        try:
            order = self.codec.decode(msg.value())
        except OrderDecodeError as exc:  # poison: retrying cannot fix bytes
            self.say(f"Poison record at {describe(msg)}: {exc}")
            self.dead_letter(msg, exc, attempts=0, label=describe(msg))
            return
        if self.verbose:
            print(f"Received order: {order}")
        try:
            attempts = call_with_retries(self.failures.maybe_fail, self.policy, self.report_failed_attempt)
        except PermanentFailure as failure:
            self.retries += failure.attempts - 1
            self.say("Permanent failure")
            self.dead_letter(msg, failure.last_error, failure.attempts, label=f"orderId {order.order_id}")
            return
        self.retries += attempts - 1
        self.count(msg, order)
        if self.verbose:
            print(f"✓ Processing successful\n{self.running_average()}\n")

    def report_failed_attempt(self, attempt: int, exc: Exception) -> None:
        self.say(f"  Attempt {attempt}/{self.policy.max_attempts} failed: {exc}")

    def process(self, messages: list[Message], stop: threading.Event) -> None:
        for msg in messages:
            if stop.is_set():
                return  # the rest are not marked done, so they are redelivered next time
            if error := msg.error():
                if error.fatal():
                    raise UserError(f"Kafka consumer failed: {error.str()}")
                self.errors += 1
                print(f"kafka: {error.str()}", file=sys.stderr)
                continue
            if partition_key(msg) not in self.assigned:
                continue  # revoked since it was polled: its new owner reads it from the committed offset
            self.handle(msg)
            self.after_each_record()

    def summary(self) -> str:
        average = self.running_average()
        return (
            f"Summary: processed={average.count} dlq={self.dead_lettered} "
            f"retries={self.retries} total={average.total_price} avg={average.avg}"
        )

    # -- what differs between delivery modes ------------------------------------------------
    def count(self, msg: Message, order: Order) -> None:
        raise NotImplementedError

    def dead_letter(self, msg: Message, error: Exception, attempts: int, label: str) -> None:
        raise NotImplementedError

    def running_average(self) -> RunningAverage:
        raise NotImplementedError

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined = True
        self.rebalances += 1
        self.assigned.update(partition_key(tp) for tp in partitions)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined = False
        self.rebalances += 1
        self.assigned.difference_update(partition_key(tp) for tp in partitions)

    def finish(self, clean: bool) -> None:
        """Before the consumer closes: nothing done may be left unacknowledged."""


class AtLeastOnceProcessor(OrderProcessor):
    """An offset is stored once every record below it is done (its order counted or its DLQ copy
    acknowledged); auto-commit and close() commit stored offsets, never merely polled ones."""

    def __init__(
        self, consumer: Consumer, dlq: DeadLetterPublisher, codec: OrderCodec, args: argparse.Namespace
    ) -> None:
        super().__init__(consumer, dlq, codec, args)
        self.offsets = OffsetTracker()
        self.aggregate = RunningAverage()

    def handle(self, msg: Message) -> None:
        self.offsets.received(partition_key(msg), offset_of(msg))
        super().handle(msg)

    def process(self, messages: list[Message], stop: threading.Event) -> None:
        try:
            super().process(messages, stop)
        finally:
            # One store per partition and batch, also when an exception cut the batch short: the
            # tracker keeps the position at the first record that is not done.
            for key in {partition_key(msg) for msg in messages}:
                self.store_offset(key)

    def count(self, msg: Message, order: Order) -> None:
        self.aggregate.add(order.price)
        self.offsets.done(partition_key(msg), offset_of(msg))

    def running_average(self) -> RunningAverage:
        return self.aggregate

    def dead_letter(self, msg: Message, error: Exception, attempts: int, label: str) -> None:
        key, offset = partition_key(msg), offset_of(msg)

        def acked() -> None:
            self.offsets.done(key, offset)
            self.store_offset(key)
            self.dead_lettered += 1
            self.say(f"Moved to DLQ: {label}\n")

        self.dlq.send(msg, error, attempts, on_acked=acked)

    def store_offset(self, key: PartitionKey) -> None:
        position = self.offsets.commit_position(key)
        if position is not None and key in self.assigned:
            self.consumer.store_offsets(offsets=[TopicPartition(key[0], key[1], position)])

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions move to another consumer: finish their DLQ writes and commit."""
        self.dlq.flush(0 if self.finished else FLUSH_TIMEOUT_S)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                print(f"kafka: commit on revoke failed: {exc.args[0].str()}", file=sys.stderr)
        super().on_revoke(consumer, partitions)
        self.offsets.forget([partition_key(p) for p in partitions])

    def finish(self, clean: bool) -> None:
        # DLQ copies acknowledged first (they store their offsets); close() then commits them.
        self.finished = True
        unacked = self.dlq.flush(FLUSH_TIMEOUT_S)
        if unacked:
            print(
                f"warning: {unacked} DLQ copies unacknowledged; their offsets stay uncommitted",
                file=sys.stderr,
            )
