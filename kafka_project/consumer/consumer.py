"""Consume orders, keep a running average, retry transient failures and dead-letter what still fails.

Delivery is at-least-once: an order's offset is committed only after the order was counted, or
after the broker acknowledged its DLQ copy. Records that are not valid orders go to the DLQ at once.

Examples:
  python kafka_project/consumer/consumer.py
  python kafka_project/consumer/consumer.py --failure-rate 0.5 --seed 7 --idle-timeout 10
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from kafka_project.cli import (
    UserError,
    add_env_flag,
    fraction,
    make_parser,
    non_negative,
    positive_int,
    run,
    stop_on_signals,
)
from kafka_project.cluster import client_config, existing_topics, missing_topic_message
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.offsets import OffsetTracker
from kafka_project.consumer.retry import (
    PermanentFailure,
    RetryPolicy,
    SimulatedFailures,
    call_with_retries,
)
from kafka_project.dlq.dlq_producer import (
    DeadLetterError,
    DeadLetterPublisher,
    describe,
    dlq_producer_config,
)
from kafka_project.order_codec import OrderCodec, OrderDecodeError

BATCH_SIZE = 500
POLL_TIMEOUT_S = 0.5
FLUSH_TIMEOUT_S = 30.0
TOPIC_RECHECK_S = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser(__doc__)
    add_env_flag(parser, "--topic", "ORDERS_TOPIC", "orders", "topic to consume")
    add_env_flag(parser, "--dlq-topic", "DLQ_TOPIC", "orders-dlq", "dead-letter topic")
    add_env_flag(parser, "--group-id", "KAFKA_GROUP_ID", "order-consumer", "consumer group")
    parser.add_argument(
        "--failure-rate",
        type=fraction,
        default=0.30,
        help="chance that one processing try fails (default %(default)s)",
    )
    parser.add_argument(
        "--max-attempts",
        type=positive_int,
        default=3,
        help="tries per order before it goes to the DLQ (default %(default)s)",
    )
    parser.add_argument(
        "--retry-backoff",
        type=non_negative(float),
        default=0.1,
        metavar="SECONDS",
        help="wait after failed try k is k times this (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=None, help="make the simulated failures repeatable")
    parser.add_argument(
        "--idle-timeout",
        type=non_negative(float),
        default=None,
        metavar="SECONDS",
        help="exit after this long without a new record (default: run until Ctrl-C)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    return parser.parse_args(argv)


def consumer_config(bootstrap_servers: str, group_id: str) -> dict:
    return client_config(
        bootstrap_servers,
        **{
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            # At-least-once: we store an offset only when its order is done; the background
            # auto-commit then commits stored offsets (never merely polled ones), and so does close().
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "isolation.level": "read_committed",
            # A killed consumer's partitions go to a restarted one after this long (Kafka's default
            # is 45 s); heartbeats come from a background thread, so slow retries do not count here.
            "session.timeout.ms": 10000,
        },
    )


class OrderProcessor:
    """Handles one record at a time: decode, process with retries, count or dead-letter."""

    def __init__(
        self, consumer: Consumer, dlq: DeadLetterPublisher, codec: OrderCodec, args: argparse.Namespace
    ) -> None:
        self.consumer = consumer
        self.dlq = dlq
        self.codec = codec
        self.failures = SimulatedFailures(args.failure_rate, random.Random(args.seed))
        self.policy = RetryPolicy(args.max_attempts, args.retry_backoff)
        self.say: Callable[[str], None] = (lambda _line: None) if args.quiet else print
        self.offsets = OffsetTracker()
        self.aggregate = RunningAverage()
        self.retries = 0
        self.dead_lettered = 0

    def handle(self, msg: Message) -> None:
        key = (msg.topic(), msg.partition())
        self.offsets.seen(key, msg.offset())
        try:
            order = self.codec.decode(msg.value())
        except OrderDecodeError as exc:  # poison: retrying cannot fix bytes
            self.say(f"Poison record at {describe(msg)}: {exc}")
            self.dead_letter(msg, exc, attempts=0, label=describe(msg))
            return
        self.say(f"Received order: {order}")
        try:
            attempts = call_with_retries(self.failures.maybe_fail, self.policy, self.report_failed_attempt)
        except PermanentFailure as failure:
            self.retries += failure.attempts - 1
            self.say("Permanent failure")
            self.dead_letter(msg, failure.last_error, failure.attempts, label=f"orderId {order.order_id}")
            return
        self.retries += attempts - 1
        self.aggregate.add(order.price)
        self.say(f"✓ Processing successful\n{self.aggregate}\n")
        self.store_offset(key)

    def report_failed_attempt(self, attempt: int, exc: Exception) -> None:
        self.say(f"  Attempt {attempt}/{self.policy.max_attempts} failed: {exc}")

    def dead_letter(self, msg: Message, error: Exception, attempts: int, label: str) -> None:
        key = (msg.topic(), msg.partition())
        offset = msg.offset()
        self.offsets.hold(key, offset)

        def acked() -> None:
            self.dead_lettered += 1
            self.say(f"Moved to DLQ: {label}\n")
            self.offsets.release(key, offset)
            self.store_offset(key)

        self.dlq.send(msg, error, attempts, on_acked=acked)

    def store_offset(self, key: tuple[str, int]) -> None:
        position = self.offsets.commit_position(key)
        if position is not None:
            self.consumer.store_offsets(offsets=[TopicPartition(key[0], key[1], position)])

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions move to another consumer: finish their DLQ writes and commit."""
        self.dlq.flush(FLUSH_TIMEOUT_S)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                print(f"kafka: commit on revoke failed: {exc.args[0].str()}", file=sys.stderr)
        self.offsets.forget([(p.topic, p.partition) for p in partitions])

    def summary(self) -> str:
        return (
            f"Summary: processed={self.aggregate.count} dlq={self.dead_lettered} "
            f"retries={self.retries} total={self.aggregate.total_price} avg={self.aggregate.avg}"
        )


def wait_for_topics(consumer: Consumer, args: argparse.Namespace, stop: threading.Event) -> bool:
    """Wait for the topics to exist (a fresh broker may still be creating them); False if stopped."""
    started = time.monotonic()
    announced = False
    while not stop.is_set():
        present = existing_topics(consumer, args.bootstrap_servers)
        missing = [topic for topic in (args.topic, args.dlq_topic) if topic not in present]
        if not missing:
            return True
        message = missing_topic_message(missing[0], args.bootstrap_servers)
        if args.idle_timeout is not None and time.monotonic() - started > args.idle_timeout:
            raise UserError(message)
        if not announced:
            print(f"Waiting: {message}", file=sys.stderr)
            announced = True
        stop.wait(TOPIC_RECHECK_S)
    return False


def consume_until_stopped(
    consumer: Consumer, processor: OrderProcessor, args: argparse.Namespace, stop: threading.Event
) -> None:
    last_active = time.monotonic()
    while not stop.is_set():
        messages = consumer.consume(num_messages=BATCH_SIZE, timeout=POLL_TIMEOUT_S)
        processor.dlq.poll()  # serve DLQ acknowledgements: they release offsets
        if messages or not consumer.assignment():  # still joining the group is not idleness
            last_active = time.monotonic()
        elif args.idle_timeout is not None and time.monotonic() - last_active > args.idle_timeout:
            return
        for msg in messages:
            if stop.is_set():
                return  # the rest are not stored, so they are redelivered next time
            if msg.error():
                if msg.error().fatal():
                    raise UserError(f"Kafka consumer failed: {msg.error().str()}")
                print(f"kafka: {msg.error().str()}", file=sys.stderr)
                continue
            processor.handle(msg)
            processor.dlq.poll()  # cheap when idle; keeps DLQ acks (and so commits) close behind


def main(args: argparse.Namespace) -> int:
    codec = OrderCodec(args.schema)
    stop = stop_on_signals()
    consumer = Consumer(consumer_config(args.bootstrap_servers, args.group_id))
    dlq = DeadLetterPublisher(
        Producer(dlq_producer_config(args.bootstrap_servers)), args.dlq_topic, args.group_id
    )
    processor = OrderProcessor(consumer, dlq, codec, args)
    try:
        if not wait_for_topics(consumer, args, stop):
            return 0
        if not args.quiet:
            print(f"Starting Kafka Consumer...\nListening for orders on '{args.topic}' topic\n")
        consumer.subscribe([args.topic], on_revoke=processor.on_revoke)
        consume_until_stopped(consumer, processor, args, stop)
    except DeadLetterError as exc:
        raise UserError(f"{exc}; its offset was not committed, so it is redelivered on restart") from exc
    finally:
        # Order matters: DLQ copies acknowledged first (they store their offsets), then close(),
        # which commits the stored offsets and leaves the group.
        unacked = dlq.flush(FLUSH_TIMEOUT_S)
        if unacked:
            print(
                f"warning: {unacked} DLQ copies unacknowledged; their offsets stay uncommitted",
                file=sys.stderr,
            )
        consumer.close()
        print(processor.summary())
    return 0


def cli() -> None:
    run(lambda: main(parse_args()))


if __name__ == "__main__":
    cli()
