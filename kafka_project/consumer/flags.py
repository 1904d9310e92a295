"""The flags both consumers take: the simulated failures, the retry policy and when to stop."""

from __future__ import annotations

import argparse

from kafka_project.cli import add_env_flag, checked, env_default, fraction, seconds

# Retries wait in memory, holding their partition's commit position: waits longer than this
# belong in a durable retry topic (docs: Retries and the DLQ), not in a consumer's memory.
MAX_RETRY_WAIT_S = 10.0
MAX_ATTEMPTS = 1000  # far above any use; bounds the work a typo could ask for
attempts = checked(
    int, lambda value: 1 <= value <= MAX_ATTEMPTS, f"is not a whole number from 1 to {MAX_ATTEMPTS}"
)


def add_processing_flags(parser: argparse.ArgumentParser) -> None:
    add_env_flag(parser, "--topic", "ORDERS_TOPIC", "orders", "topic to consume")
    add_env_flag(parser, "--dlq-topic", "DLQ_TOPIC", "orders-dlq", "dead-letter topic")
    add_env_flag(parser, "--stats-topic", "STATS_TOPIC", "orders-stats", "compacted topic of snapshots")
    parser.add_argument(
        "--failure-rate",
        type=fraction,
        default=env_default("FAILURE_RATE", "0.3"),  # a string default goes through `fraction` too
        help="chance that one processing try fails (env FAILURE_RATE; default %(default)s)",
    )
    parser.add_argument(
        "--work-time",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="time each processing try takes (a payment or stock call in a real service; "
        "default %(default)s)",
    )
    parser.add_argument(
        "--max-attempts",
        type=attempts,
        default=3,
        help="tries per order before it goes to the DLQ (default %(default)s)",
    )
    parser.add_argument(
        "--retry-backoff",
        type=seconds,
        default=0.1,
        metavar="SECONDS",
        help="wait after failed try k is k times this (default %(default)s); consumer.py takes at most "
        f"{MAX_RETRY_WAIT_S:.0f} s of waits per order in all",
    )
    parser.add_argument("--seed", type=int, default=None, help="make the simulated failures repeatable")
    parser.add_argument(
        "--idle-timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="exit after this long without a new record (default: run until Ctrl-C)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the final summary")


def refuse_shared_topics(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 if the source, DLQ and stats topics are not three different topics: a DLQ that is its
    own source copies a poison record into itself for ever (802 copies, 107 MB in 8 s)."""
    roles = {"--topic": args.topic, "--dlq-topic": args.dlq_topic, "--stats-topic": args.stats_topic}
    seen: dict[str, str] = {}
    for flag, topic in roles.items():
        if topic in seen:
            parser.error(f"{seen[topic]} and {flag} are both '{topic}'; they must be different topics")
        seen[topic] = flag
