"""Consume orders, keep a running average, retry transient failures and dead-letter what still fails.

Delivery is at-least-once by default: an order's offset is committed only after the order was
counted, or after the broker acknowledged its DLQ copy. With --exactly-once, DLQ copies, per-partition
aggregate snapshots (in --stats-topic) and offsets are committed in one Kafka transaction, and the
aggregate survives restarts and rebalances. Records that are not valid orders go to the DLQ at once.

Examples:
  python kafka_project/consumer/consumer.py
  python kafka_project/consumer/consumer.py --failure-rate 0.5 --seed 7 --idle-timeout 10
  python kafka_project/consumer/consumer.py --exactly-once
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import closing

from confluent_kafka import Consumer, KafkaException, Message, Producer

from kafka_project.cli import (
    add_env_flag,
    add_wait_for_topics_flag,
    env_default,
    make_parser,
    order_codec,
    parse_with_connection,
    port_number,
    positive_int,
    run,
    silence_stdout,
    stop_on_signals,
)
from kafka_project.cluster import client_config, refused_settings_text, wait_for_topics
from kafka_project.consumer.exactly_once import ExactlyOnceProcessor
from kafka_project.consumer.flags import MAX_RETRY_WAIT_S, add_processing_flags, refuse_shared_topics
from kafka_project.consumer.group_protocol import (
    GROUP_PROTOCOLS,
    group_settings,
    group_tuning,
    refused_protocol,
)
from kafka_project.consumer.live_view import status_display
from kafka_project.consumer.metrics import serve_metrics
from kafka_project.consumer.processor import AtLeastOnceProcessor, OrderProcessor, position_of
from kafka_project.consumer.retry import RetryPolicy
from kafka_project.consumer.state import STATS_TOPIC_CONFIG
from kafka_project.consumer.status import StatusSampler
from kafka_project.dlq.dlq_producer import DeadLetterPublisher, dlq_producer_config
from kafka_project.dlq.headers import DLQ_TOPIC_CONFIG
from kafka_project.errors import InvalidInputError
from kafka_project.order_codec import OrderCodec
from kafka_project.transactions import transactional_producer_config

BATCH_SIZE = 500
POLL_TIMEOUT_S = 0.5
DEFAULT_MAX_IN_FLIGHT = 10000
# The record values of orders in progress, at most: 10,000 orders of the largest size an order may
# have (order_codec.MAX_VALUE_BYTES, 16 KiB) would hold 160 MiB while a payment service is down.
DEFAULT_MAX_IN_FLIGHT_BYTES = 32 * 1024 * 1024
# Performance settings that differ from librdkafka's defaults; --config may override them.
CONSUMER_TUNING = {
    # librdkafka stops fetching a partition once queued.min.messages (100,000) records are queued,
    # then waits this long before fetching again (1 s by default) although the queue drains in a
    # third of that: a consumer catching up idled most of the time. The queue limits still bound memory.
    "fetch.queue.backoff.ms": 10,
}


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_processing_flags(parser)
    add_env_flag(parser, "--group-id", "KAFKA_GROUP_ID", "order-consumer", "consumer group")
    parser.add_argument(
        "--max-in-flight",
        type=positive_int,
        default=DEFAULT_MAX_IN_FLIGHT,
        metavar="N",
        help="orders in progress at most (waiting for a retry, or behind an earlier order of "
        "their key); 1 = one order at a time (default %(default)s)",
    )
    parser.add_argument(
        "--max-in-flight-bytes",
        type=positive_int,
        default=DEFAULT_MAX_IN_FLIGHT_BYTES,
        metavar="BYTES",
        help="the records (values, keys, headers) of orders in progress, at most (plus one batch; "
        "default %(default)s: 32 MiB)",
    )
    parser.add_argument(
        "--exactly-once",
        action="store_true",
        help="commit DLQ copies, aggregate snapshots and offsets in one transaction",
    )
    parser.add_argument(
        "--group-protocol",
        choices=GROUP_PROTOCOLS,
        default=env_default("KAFKA_GROUP_PROTOCOL", "classic"),
        help="how the group shares partitions: classic (every rebalance stops every member), "
        "classic-cooperative (cooperative-sticky: only moved partitions stop), consumer (KIP-848, "
        "Kafka 4 brokers: the broker assigns, incrementally) (env KAFKA_GROUP_PROTOCOL; default %(default)s)",
    )
    add_wait_for_topics_flag(parser, None, "until they exist, or --idle-timeout when given")
    parser.add_argument(
        "--metrics-port",
        type=port_number,
        default=env_default("METRICS_PORT", None),
        metavar="PORT",
        help="serve Prometheus metrics on http://0.0.0.0:PORT/metrics (env METRICS_PORT; default: off)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parse_with_connection(parser, argv)
    refuse_shared_topics(parser, args)
    if args.group_protocol not in GROUP_PROTOCOLS:  # argparse checks a flag's choices, not an env default
        parser.error(
            f"KAFKA_GROUP_PROTOCOL={args.group_protocol!r} is not one of {', '.join(GROUP_PROTOCOLS)}"
        )
    if RetryPolicy(args.max_attempts, args.retry_backoff).worst_case_s() > MAX_RETRY_WAIT_S:
        parser.error(
            f"--max-attempts {args.max_attempts} with --retry-backoff {args.retry_backoff} waits over "
            f"{MAX_RETRY_WAIT_S:.0f} s per order; retry that slowly from the DLQ instead"
        )
    return args


def consumer_config(
    bootstrap_servers: str, group_id: str, exactly_once: bool = False, group_protocol: str = "classic"
) -> dict:
    settings = client_config(
        bootstrap_servers,
        **group_settings(group_protocol),
        **{
            "group.id": group_id,
            "auto.offset.reset": "earliest",
            # At-least-once: we store an offset only when its order is done; the background
            # auto-commit then commits stored offsets (never merely polled ones), and so does close().
            # Exactly-once: offsets are committed only inside transactions.
            "enable.auto.offset.store": False,
            "enable.auto.commit": not exactly_once,
            "auto.commit.interval.ms": 1000,
            "isolation.level": "read_committed",
        },
    )
    # --config may retune CONSUMER_TUNING and the session timeout, never the settings above
    return {**CONSUMER_TUNING, **group_tuning(group_protocol), **settings}


def topics_ready(consumer: Consumer, args: argparse.Namespace, stop: threading.Event) -> bool:
    """Wait for the topics as --wait-for-topics says (by default until they exist, or until
    --idle-timeout when that is given); False if stopped meanwhile."""
    needed = [args.topic, args.dlq_topic] + ([args.stats_topic] if args.exactly_once else [])
    wait_s = args.idle_timeout if args.wait_for_topics is None else args.wait_for_topics
    configs = {args.dlq_topic: DLQ_TOPIC_CONFIG, args.stats_topic: STATS_TOPIC_CONFIG}
    return wait_for_topics(consumer, args.bootstrap_servers, needed, wait_s, stop, configs)


def poll_batch(consumer: Consumer, processor: OrderProcessor) -> list[Message]:
    """Wait for one record (no longer than until the next retry is due), then take what is already
    fetched, as far as --max-in-flight leaves room: batches without waiting for them."""
    first = consumer.poll(processor.poll_timeout(POLL_TIMEOUT_S))
    if first is None:
        return []
    room = min(BATCH_SIZE, processor.room())
    if room <= 1:
        return [first]
    processor.moved.clear()
    more = consumer.consume(num_messages=room - 1, timeout=0)
    if first.error() is None and position_of(first)[0] in processor.moved:
        # consume() ran a rebalance after poll() returned `first`, and its partition moved: it is
        # another consumer's now, or comes again from where its new assignment starts. A
        # partition a cooperative rebalance left alone is not fetched again: `first` stays.
        return more
    return [first, *more]


def consume_until_stopped(
    consumer: Consumer,
    processor: OrderProcessor,
    args: argparse.Namespace,
    stop: threading.Event,
    between_batches: Callable[[], None] = lambda: None,
) -> None:
    last_active, rebalances_seen = time.monotonic(), processor.rebalances
    while not stop.is_set():
        between_batches()
        processor.run_due(stop)  # the retries whose time has come
        processor.pause_or_resume()
        if processor.holding_back():  # full for a moment: keep librdkafka's prefetched records
            stop.wait(processor.poll_timeout(POLL_TIMEOUT_S))
            messages: list[Message] = []
        else:
            messages = poll_batch(consumer, processor)
        processor.dlq.poll()  # serve DLQ acknowledgements: they release offsets
        if not processor.rebalances:  # once the group has answered, the protocol is served
            refused_protocol.check(args.bootstrap_servers)
        # Records (not error events: a join the broker refuses again and again is no work), a
        # rebalance since the last batch (a new assignment has records to fetch, however long the
        # call that ran it took), (re)joining the group, orders in progress or records waiting for
        # the Schema Registry are not idleness; owning no partitions is.
        rebalanced, rebalances_seen = processor.rebalances != rebalances_seen, processor.rebalances
        if (
            any(msg.error() is None for msg in messages)
            or rebalanced
            or processor.joining()
            or processor.schedule.size
            or processor.registry_wait.waiting
        ):
            last_active = time.monotonic()
        elif args.idle_timeout is not None and time.monotonic() - last_active > args.idle_timeout:
            return
        processor.process(messages, stop)
        processor.checkpoint(quiet=not messages)


ProcessorFactory = Callable[[Consumer, OrderCodec, argparse.Namespace], OrderProcessor]


def make_processor(
    consumer: Consumer,
    codec: OrderCodec,
    args: argparse.Namespace,
    producer_class: type[Producer] = Producer,
) -> OrderProcessor:
    """The processor the flags ask for. producer_class makes every producer it uses (tests pass a
    Producer subclass that stalls or times its transactions)."""
    if not args.exactly_once:
        producer = producer_class(dlq_producer_config(args.bootstrap_servers))
        return AtLeastOnceProcessor(
            consumer, DeadLetterPublisher(producer, args.dlq_topic, args.group_id), codec, args
        )

    def new_producer() -> Producer:
        transactional_id = f"{args.group_id}-{uuid.uuid4()}"
        return producer_class(transactional_producer_config(args.bootstrap_servers, transactional_id))

    dlq = DeadLetterPublisher(new_producer(), args.dlq_topic, args.group_id, resend_failed=False)
    return ExactlyOnceProcessor(
        consumer,
        dlq,
        codec,
        args,
        new_producer=new_producer,
        stats_topic=args.stats_topic,
        group_id=args.group_id,
    )


class Monitor:
    """The status a few times a second: shown live (unless --quiet) and served to Prometheus (if asked)."""

    def __init__(self, consumer: Consumer, processor: OrderProcessor, args: argparse.Namespace) -> None:
        self.sampler = StatusSampler(consumer, processor)
        self.stop_metrics = (
            serve_metrics(args.metrics_port, lambda: self.sampler.latest) if args.metrics_port else None
        )
        mode = "exactly-once" if args.exactly_once else "at-least-once"
        self.display = None if args.quiet else status_display(f"{args.topic} → {args.group_id} ({mode})")
        if self.display or self.stop_metrics:
            processor.after_each_record = self.update

    def update(self, force: bool = False) -> None:
        status = self.sampler.sample(force)
        if status and self.display:
            self.display.show(status)

    def close(self) -> None:
        self.update(force=True)
        if self.display:
            self.display.close()
        if self.stop_metrics:
            self.stop_metrics()


def main(args: argparse.Namespace) -> int:
    return consume(args, stop_on_signals())


def consume(
    args: argparse.Namespace,
    stop: threading.Event,
    build_processor: ProcessorFactory = make_processor,
    between_batches: Callable[[], None] = lambda: None,
) -> int:
    """Everything the consumer script does once its flags are read, until `stop` or --idle-timeout.
    Tests run it in process, with a processor of their own building and a hook between batches."""
    codec = order_codec(args)
    try:
        consumer = Consumer(
            consumer_config(args.bootstrap_servers, args.group_id, args.exactly_once, args.group_protocol)
        )
    except KafkaException as exc:  # e.g. a --config setting the group protocol does not take
        raise InvalidInputError(f"cannot create the consumer: {refused_settings_text(exc)}") from None
    with closing(consumer):  # close() commits the stored offsets and leaves the group, whatever happens
        if not topics_ready(consumer, args, stop):
            return 0
        processor = build_processor(consumer, codec, args)
        if not args.quiet:
            print(f"Starting Kafka Consumer...\nListening for orders on '{args.topic}' topic\n")
        monitor = Monitor(consumer, processor, args)

        def each_batch() -> None:
            monitor.update()
            between_batches()

        try:
            consumer.subscribe(
                [args.topic],
                on_assign=processor.on_assign,
                on_revoke=processor.on_revoke,
                on_lost=processor.on_lost,
            )
            consume_until_stopped(consumer, processor, args, stop, each_batch)
            # The retries left, the DLQ writes, or the open transaction, before close() commits.
            processor.finish(clean=True)
        except BaseException as exc:  # a second Ctrl-C during the clean finish lands here too
            if isinstance(exc, BrokenPipeError):
                silence_stdout()  # the DLQ acknowledgements below print too
            # Finish what is on its way (DLQ acknowledgements, or abort the open transaction):
            # nothing that is not done gets committed.
            processor.finish(clean=False)
            raise
        finally:
            monitor.close()
            print(processor.summary())
    return 0


def cli() -> None:
    run(lambda: main(parse_args()))


if __name__ == "__main__":
    cli()
