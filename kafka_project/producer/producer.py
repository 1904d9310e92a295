"""Stream random orders to Kafka, one Avro single-object record per message, keyed by orderId
(or, with --customers N, by one of N customer ids, so orders of one customer share a key).

Examples:
  python kafka_project/producer/producer.py                      # one order a second until Ctrl-C
  python kafka_project/producer/producer.py --count 1000 --interval 0 --seed 42 --quiet
  python kafka_project/producer/producer.py --count 5000 --interval 0 --customers 10
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from itertools import count, islice, repeat

from confluent_kafka import Producer

from kafka_project.cli import (
    add_env_flag,
    add_wait_for_topics_flag,
    make_parser,
    non_negative,
    order_codec,
    parse_with_connection,
    positive_int,
    run,
    seconds,
    silence_stdout,
    stop_on_signals,
)
from kafka_project.cluster import TOPIC_UNKNOWN_WAIT_S, client_config, wait_for_topics
from kafka_project.order_codec import Order, OrderCodec
from kafka_project.producer.progress import Advance, progress_bar
from kafka_project.producer.sender import DeliveryReport, OrderSender

PRODUCTS = ["Laptop", "Phone", "Tablet", "Headphones", "Monitor", "Keyboard", "Mouse", "Camera"]
PRICE_CENTS = (500, 150_000)  # $5.00 to $1,500.00
# librdkafka's delivery timeout (message.timeout.ms): a record still queued after it has failed.
FLUSH_TIMEOUT_S = TOPIC_UNKNOWN_WAIT_S


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__)
    add_env_flag(parser, "--topic", "ORDERS_TOPIC", "orders", "topic to write to")
    parser.add_argument(
        "--count",
        type=non_negative(int),
        default=None,
        help="stop after this many orders (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--interval",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="pause between orders; 0 = as fast as possible (default %(default)s)",
    )
    parser.add_argument(
        "--customers",
        type=positive_int,
        default=None,
        metavar="N",
        help="key each order by one of N customer ids (customer-1 .. customer-N) instead of its orderId",
    )
    parser.add_argument("--seed", type=int, default=None, help="make the orders reproducible")
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")
    parser.add_argument(
        "--use-latest-schema",
        action="store_true",
        help="with --schema-registry: write with the latest version registered under the topic's "
        "subject instead of registering --schema",
    )
    add_wait_for_topics_flag(parser, 0.0, "0")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_with_connection(build_parser(), argv)


def producer_config(bootstrap_servers: str, report_successes: bool = True) -> dict:
    return client_config(
        bootstrap_servers,
        **{
            # Idempotence (implies acks=all): a retried send is never written twice, order is kept.
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            # Quiet runs need no callback per delivered order: after flush() returns 0, every
            # order without an error report was delivered.
            "delivery.report.only.error": not report_successes,
        },
    )


def random_orders(seed: int | None = None) -> Iterator[Order]:
    """Endless random orders. IDs are a run id plus a sequence number: unique within a run,
    and a 32-bit run id keeps separate runs apart (the same --seed repeats a run on purpose)."""
    rng = random.Random(seed)
    run_id = f"{rng.getrandbits(32):08X}"
    lowest, span = PRICE_CENTS[0], PRICE_CENTS[1] - PRICE_CENTS[0] + 1
    for sequence in count(1):
        # rng.random() is several times cheaper than randint()/choice(): it shows at 100,000 orders/s.
        cents = lowest + int(rng.random() * span)
        product = PRODUCTS[int(rng.random() * len(PRODUCTS))]
        yield Order(f"ORD-{run_id}-{sequence:06d}", product, Decimal(cents).scaleb(-2))


def order_keys(customers: int | None, seed: int | None) -> Iterator[str | None]:
    """The customer of each order: None (keyed by its orderId) or a random customer id."""
    if customers is None:
        return repeat(None)
    rng = random.Random(f"customers-{seed}")  # its own draws: the orders stay those of --seed
    return (f"customer-{1 + int(rng.random() * customers)}" for _ in count())


def wait_serving_callbacks(sender: OrderSender, until: float, stop: threading.Event) -> None:
    """Sleep between orders while delivery reports keep printing as they arrive."""
    while not stop.is_set() and (left := until - time.monotonic()) > 0:
        sender.poll(min(left, 0.1))


def main(args: argparse.Namespace) -> int:
    codec = order_codec(args, produce_to=args.topic)
    report = DeliveryReport(args.quiet)
    # One delivery callback for the producer, not one handed over with every order.
    config = producer_config(args.bootstrap_servers, report_successes=not args.quiet)
    producer = Producer({**config, "on_delivery": report})
    stop = stop_on_signals()
    sender = OrderSender(producer, args.bootstrap_servers, args.topic, report, stop)
    if not wait_for_topics(producer, args.bootstrap_servers, [args.topic], args.wait_for_topics, stop):
        return 0
    interrupted: KeyboardInterrupt | None = None
    try:
        if not args.quiet:
            print(f"Starting Kafka Producer...\nSending orders to '{args.topic}' topic\n")
        with progress_bar(args.count, args.topic) as progress:
            send_orders(args, codec, sender, progress, stop)
    except KeyboardInterrupt as exc:  # a second Ctrl-C: stop now, but still say what was delivered
        interrupted = exc
    finally:
        # Whatever ended the run (the count, Ctrl-C, a closed stdout, an error): what was handed to
        # librdkafka is delivered or counted as failed, and the summary says which.
        failed, interrupted = finish_sending(sender, interrupted)
    if interrupted:
        raise interrupted
    if sender.gave_up:
        raise sender.gave_up
    if report.stdout_closed:
        raise BrokenPipeError  # run() says so and exits as a Unix tool does
    return 1 if failed else 0


def finish_sending(
    sender: OrderSender, interrupted: KeyboardInterrupt | None
) -> tuple[int, KeyboardInterrupt | None]:
    """Flush (bounded; not at all after a second Ctrl-C, which also ends a flush), then the
    summary. The orders that failed, and the second Ctrl-C to raise once the summary is out."""
    report = sender.report
    undelivered = 0
    if interrupted is None:
        try:
            undelivered = flush_saying_so(sender)
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        sender.producer.poll(0)  # the delivery reports already in count as delivered
        undelivered = len(sender.producer) + len(report.unsent)
        print(f"error: stopped with {undelivered} orders not confirmed delivered", file=sys.stderr)
    elif undelivered and not sender.gave_up:
        print(f"error: {undelivered} orders not delivered within {FLUSH_TIMEOUT_S:.0f} s", file=sys.stderr)
    if sender.found_written:
        print(
            f"{sender.found_written} orders librdkafka gave back were in the topic already: not sent again",
            file=sys.stderr,
        )
    failed = report.failed + undelivered
    sent = sender.handed_over
    print_even_if_stdout_closed(f"Summary: sent={sent} delivered={sent - failed} failed={failed}", report)
    return failed, interrupted


def flush_saying_so(sender: OrderSender) -> int:
    """Wait for every order (FLUSH_TIMEOUT_S at most); a wait longer than a second says so."""
    undelivered = sender.flush(1.0)
    if undelivered == 0:
        return 0
    print(
        f"Waiting for {undelivered} orders to be delivered (up to {FLUSH_TIMEOUT_S:.0f} s; "
        "Ctrl-C again to stop now)",
        file=sys.stderr,
    )
    return sender.flush(FLUSH_TIMEOUT_S - 1.0)


def print_even_if_stdout_closed(line: str, report: DeliveryReport) -> None:
    """The summary goes to stdout, or to stderr once stdout is closed (`producer.py | head`)."""
    if not report.stdout_closed:
        try:
            print(line, flush=True)
            return
        except BrokenPipeError:
            silence_stdout()
            report.stdout_closed = True
    print(line, file=sys.stderr)


def send_orders(
    args: argparse.Namespace,
    codec: OrderCodec,
    sender: OrderSender,
    progress: Advance,
    stop: threading.Event,
) -> None:
    """Hand the orders to librdkafka, on --interval's schedule."""
    sent = 0
    next_send = time.monotonic()
    keys = order_keys(args.customers, args.seed)  # endless: the orders set the length
    orders = zip(islice(random_orders(args.seed), args.count), keys, strict=False)
    carries_customer = codec.writes("customerId")  # schema version 2 does, version 1 does not
    for order, customer in orders:
        if stop.is_set():
            break
        if sender.report.stdout_closed:  # met by a delivery line (--interval > 0): stop as a Unix tool
            raise BrokenPipeError
        if customer is not None and carries_customer:
            order = order._replace(customer_id=customer)
        if not sender.send((customer or order.order_id).encode(), codec.encode(order)):
            break  # a stop came while librdkafka had no room or no topic for it: not sent
        sent += 1
        progress(sent)
        if not args.quiet:
            print(f"Sent order: {order}")
        if not args.quiet or sent % 1000 == 0:  # quiet runs only get error reports: poll now and then
            sender.poll(0)
        if args.interval:
            # Keep to a schedule, so --interval 0.001 means 1,000 orders/s however long a send
            # takes (after a stall it catches up by at most a second's worth of orders).
            next_send = max(next_send + args.interval, time.monotonic() - 1.0)
            wait_serving_callbacks(sender, next_send, stop)
    progress(sent, final=True)


def cli() -> None:
    run(lambda: main(parse_args()))


if __name__ == "__main__":
    cli()
