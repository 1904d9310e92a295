"""Consume orders in a share group (Kafka 4.2+, KIP-932): any number of consumers on one partition.

The broker hands each record to one consumer of the group under a time-limited lock and counts its
deliveries. An order gets its --max-attempts tries (spaced by --retry-backoff) within a delivery:
one that succeeds is counted, then accepted; one whose last try fails gets its DLQ copy
(dlq.attempts: the tries) and is accepted once the broker acknowledged the copy. Poison goes to the
DLQ at once. A delivery whose consumer died is delivered again and tried afresh; the group's last
delivery is dead-lettered untried (TriesUsedUp), as the broker would drop the record after it.

At-least-once, no transactions: the running average is this process's, and an order whose consumer
died before its acceptance reached the broker, or whose acceptance came after its lock expired
(a broker restart, a batch slower than the lock), is counted again. Each consumer publishes
its count and total to --stats-topic before it accepts them; stats.py --group-id GROUP adds them up.

Examples:
  python kafka_project/consumer/share_consumer.py --bootstrap-servers localhost:39092
  python kafka_project/consumer/share_consumer.py --share-group order-workers --idle-timeout 10
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaException, Producer, ShareConsumer

from kafka_project.cli import (
    add_env_flag,
    add_wait_for_topics_flag,
    make_parser,
    order_codec,
    parse_with_connection,
    run,
    silence_stdout,
    stop_on_signals,
)
from kafka_project.cluster import client_config, refused_settings_text, wait_for_topics
from kafka_project.consumer.flags import add_processing_flags, refuse_shared_topics
from kafka_project.consumer.retry import RetryPolicy
from kafka_project.consumer.share_group import prepare_share_group
from kafka_project.consumer.share_processor import ShareProcessor
from kafka_project.consumer.state import STATS_TOPIC_CONFIG
from kafka_project.dlq.dlq_producer import DeadLetterError, DeadLetterPublisher, dlq_producer_config
from kafka_project.dlq.headers import DLQ_TOPIC_CONFIG
from kafka_project.errors import InvalidInputError, UserError
from kafka_project.order_codec import OrderCodec

POLL_TIMEOUT_S = 0.5
# A new member gets its partitions in a heartbeat response, the first or (measured here) the second.
JOIN_HEARTBEATS = 2
CLOSE_TIMEOUT_S = 30.0
# Settings that differ from librdkafka's defaults; --config may override them.
SHARE_CONSUMER_TUNING = {
    # A batch is answered after its last record: smaller batches are answered sooner and leave more
    # records to the other consumers. Best effort: the broker hands out whole producer batches.
    "max.poll.records": 100,
}


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_processing_flags(parser)
    add_env_flag(parser, "--share-group", "KAFKA_SHARE_GROUP", "order-workers", "share group")
    add_wait_for_topics_flag(parser, None, "until they exist, or --idle-timeout when given")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parse_with_connection(parser, argv)
    refuse_shared_topics(parser, args)
    return args


def share_consumer_config(bootstrap_servers: str, group: str) -> dict:
    # Explicit acknowledgement: a record is answered when it is done, not when the next poll runs.
    settings = client_config(
        bootstrap_servers, **{"group.id": group, "share.acknowledgement.mode": "explicit"}
    )
    return {**SHARE_CONSUMER_TUNING, **settings}


def consume_until_stopped(
    consumer: ShareConsumer,
    processor: ShareProcessor,
    args: argparse.Namespace,
    stop: threading.Event,
    joining_s: float,
) -> None:
    # A share consumer calls no rebalance callback: the first joining_s are taken as joining, not idleness.
    last_active = time.monotonic() + joining_s
    while not stop.is_set():
        try:
            messages = list(consumer.poll(POLL_TIMEOUT_S))  # also sends the previous batch's answers
        except KafkaException as exc:
            raise UserError(f"Kafka share consumer failed: {exc.args[0].str()}") from None
        polled_at = time.monotonic()
        if not messages:
            if args.idle_timeout is not None and polled_at - last_active > args.idle_timeout:
                return
            continue
        processor.handle(messages, stop, polled_at)
        last_active = time.monotonic()  # after the batch: its released tries come back now


@contextmanager
def closing_share_consumer(consumer: ShareConsumer) -> Iterator[ShareConsumer]:
    """close() sends the answers given so far and hands back the records without one, whatever
    happened. It runs on a thread of its own, waited for CLOSE_TIMEOUT_S: librdkafka's share
    consumer is a preview, and once here its close() did not return (the records it still held
    come back after their lock, as after a crash)."""
    try:
        yield consumer
    finally:
        errors: list[KafkaException] = []

        def close() -> None:
            try:
                consumer.close()
            except KafkaException as exc:
                errors.append(exc)

        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        closer.join(CLOSE_TIMEOUT_S)
        if closer.is_alive():
            print(f"kafka: the share consumer did not close within {CLOSE_TIMEOUT_S:.0f} s", file=sys.stderr)
        for exc in errors:
            print(f"kafka: closing the share consumer: {exc.args[0].str()}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    codec = order_codec(args)
    stop = stop_on_signals()
    try:  # first: a --config the share consumer refuses changes nothing on the broker
        consumer = ShareConsumer(share_consumer_config(args.bootstrap_servers, args.share_group))
    except (KafkaException, ValueError) as exc:
        raise InvalidInputError(f"cannot create the share consumer: {refused_settings_text(exc)}") from None
    with closing_share_consumer(consumer):
        return consume(consumer, codec, stop, args)


def consume(
    consumer: ShareConsumer, codec: OrderCodec, stop: threading.Event, args: argparse.Namespace
) -> int:
    limits = prepare_share_group(
        args.bootstrap_servers, args.share_group, RetryPolicy(args.max_attempts, args.retry_backoff)
    )
    producer = Producer(dlq_producer_config(args.bootstrap_servers))  # DLQ copies and snapshots
    wait_s = args.idle_timeout if args.wait_for_topics is None else args.wait_for_topics
    configs = {args.dlq_topic: DLQ_TOPIC_CONFIG, args.stats_topic: STATS_TOPIC_CONFIG}
    needed = [args.topic, args.dlq_topic, args.stats_topic]
    if not wait_for_topics(producer, args.bootstrap_servers, needed, wait_s, stop, configs):
        return 0
    consumer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    processor = ShareProcessor(
        consumer,
        DeadLetterPublisher(producer, args.dlq_topic, args.share_group),
        codec,
        args,
        consumer_id,
        limits,
    )
    consumer.set_acknowledgement_commit_callback(processor.on_acknowledged)
    consumer.subscribe([args.topic])
    if not args.quiet:
        print(
            f"Starting Kafka share consumer {consumer_id}...\nSharing '{args.topic}' in share group "
            f"'{args.share_group}' (deliveries per record: {limits.delivery_limit}, "
            f"lock: {limits.lock_duration_s:g} s)\n"
        )
    try:
        consume_until_stopped(consumer, processor, args, stop, JOIN_HEARTBEATS * limits.heartbeat_s)
    except BrokenPipeError:
        silence_stdout()
        raise
    except DeadLetterError as exc:  # a restart does not hold records: each one uses a delivery
        raise UserError(
            f"{exc}; in a share group each restart uses one of the record's {limits.delivery_limit} "
            "deliveries, after the last the broker drops it"
        ) from None
    finally:
        print(processor.summary())
    return 0


def cli() -> None:
    run(lambda: main(parse_args()))


if __name__ == "__main__":
    cli()
