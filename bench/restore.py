"""Measure how long the exactly-once consumer's first assignment takes after a group history of N commits.

For each N: fresh orders, DLQ and stats topics and a fresh group. The history is written as the
consumer would leave it: N orders, N aggregate snapshots in the (compacted) stats topic, keyed and
encoded as the consumer publishes them, and N offset commits for the group, each carrying its
partition's aggregate in the offset metadata; the last commit is synchronous. Then a real
ExactlyOnceProcessor, built as consumer.py builds it, subscribes three times, each time with a fresh
consumer after the previous one left the group; the time from subscribe() to the end of on_assign
(aggregates restored from the committed offsets) is the median of the three, and the restored
aggregate must equal the last one committed. For comparison: one full read of the stats topic with
read_topic(), what the old restore did at least once per assignment (median of three reads).
The topics and groups are deleted at the end.

Examples:
  python bench/restore.py                                  # 0, 1,000, 10,000 and 100,000 commits
  python bench/restore.py --commits 0,1000 --partitions 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_project.cli import add_env_flag, make_parser
from kafka_project.cluster import client_config, produce, read_topic
from kafka_project.consumer import consumer as consumer_script
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.exactly_once import ExactlyOnceProcessor
from kafka_project.consumer.state import PartitionState, aggregate_to_metadata
from kafka_project.dlq.headers import DLQ_MAX_MESSAGE_BYTES
from kafka_project.order_codec import OrderCodec
from kafka_project.producer.producer import producer_config, random_orders

JOINS = 3  # assignments timed per history: the median is shown
READS = 3  # full reads of the stats topic per history: the median is shown
JOIN_TIMEOUT_S = 60.0
# Asynchronous commits in flight while the history is written: the broker answers a few thousand
# a second here, and a longer queue only costs the client memory and time.
MAX_PENDING_COMMITS = 10_000
codec = OrderCodec()
T = TypeVar("T")


def commit_counts(text: str) -> list[int]:
    try:
        counts = [int(part.replace("_", "")) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(n < 0 for n in counts):
        raise argparse.ArgumentTypeError("commit counts cannot be negative")
    return counts


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__, common_args=False)
    add_env_flag(parser, "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "Kafka brokers")
    parser.add_argument(
        "--commits",
        type=commit_counts,
        default=[0, 1000, 10_000, 100_000],
        metavar="N,N,...",
        help="history sizes, in commits (default 0,1000,10000,100000)",
    )
    parser.add_argument(
        "--partitions", type=int, default=1, help="partitions of the orders topic (default %(default)s)"
    )
    args = parser.parse_args()
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")
    return args


@dataclass
class History:
    """What one group's history left behind: what a restore must find."""

    orders: str
    dlq: str
    stats: str
    group: str
    commits: int
    last: dict[int, tuple[int, RunningAverage]] = field(default_factory=dict)  # partition -> offset, agg


@dataclass
class Join:
    seconds: float  # subscribe() to the end of on_assign
    on_assign_seconds: float  # on_assign alone: the restore and the assign
    restored: dict[int, tuple[int, RunningAverage]]  # partition -> committed offset, aggregate


class RestoreBench:
    def __init__(self, bootstrap: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.topics: list[str] = []
        self.groups: list[str] = []

    def topic(self, name: str, partitions: int = 1, /, **config: str) -> str:
        topic = f"bench-restore-{name}-{uuid.uuid4().hex[:6]}"
        for future in self.admin.create_topics([NewTopic(topic, partitions, config=config)]).values():
            future.result(30)
        self.topics.append(topic)
        return topic

    # -- the history ---------------------------------------------------------------------------
    def history(self, commits: int) -> History:
        """N orders, N snapshots and N commits, one per order, round-robin over the partitions:
        commit i is offset (i // partitions) + 1 of partition i % partitions, with that
        partition's aggregate so far in its metadata, as ExactlyOnceProcessor.commit() writes it."""
        history = History(
            orders=self.topic("orders", self.partitions),
            dlq=self.topic("dlq", **{"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}),
            stats=self.topic("stats", **{"cleanup.policy": "compact"}),
            group=f"bench-restore-{uuid.uuid4().hex[:6]}",
            commits=commits,
        )
        self.groups.append(history.group)
        orders_producer = Producer(producer_config(self.bootstrap, report_successes=False))
        # A plain idempotent producer with big batches: the old restore scanned these records.
        stats_producer = Producer(
            client_config(
                self.bootstrap,
                **{"enable.idempotence": True, "linger.ms": 50, "batch.size": 1_000_000},
            )
        )
        failed_commits: list[KafkaError] = []
        acknowledged = 0

        def on_commit(err: KafkaError | None, _partitions: list[TopicPartition]) -> None:
            nonlocal acknowledged
            acknowledged += 1
            if err is not None:
                failed_commits.append(err)

        def await_commits(pending: int) -> None:
            """Serve commit results until at most `pending` commits are unanswered."""
            deadline = time.monotonic() + 120
            while sent - acknowledged > pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"history: {sent - acknowledged} commits unanswered after 120 s")
                committer.poll(0.01)

        committer = Consumer(
            client_config(
                self.bootstrap,
                **{"group.id": history.group, "enable.auto.commit": False, "on_commit": on_commit},
            )
        )
        aggregates = [RunningAverage() for _ in range(self.partitions)]
        orders = random_orders(commits)
        sent = 0  # asynchronous commits
        try:
            for i in range(commits):
                partition = i % self.partitions
                order = next(orders)
                produce(
                    orders_producer,
                    history.orders,
                    key=order.order_id.encode(),
                    value=codec.encode(order),
                    partition=partition,
                )
                aggregate = aggregates[partition]
                aggregate.add(order.price)
                next_offset = i // self.partitions + 1
                state = PartitionState(
                    history.group,
                    history.orders,
                    partition,
                    aggregate.count,
                    aggregate.total_price,
                    next_offset,
                )
                produce(stats_producer, history.stats, key=state.key, value=state.to_json())
                offsets = [
                    TopicPartition(history.orders, partition, next_offset, aggregate_to_metadata(aggregate))
                ]
                history.last[partition] = (
                    next_offset,
                    RunningAverage(aggregate.count, aggregate.total_price),
                )
                if i == commits - 1:
                    committer.commit(offsets=offsets, asynchronous=False)  # the final aggregate
                else:
                    committer.commit(offsets=offsets, asynchronous=True)
                    sent += 1
                    await_commits(MAX_PENDING_COMMITS)
            await_commits(0)
            for producer in (orders_producer, stats_producer):
                if producer.flush(60) != 0:
                    raise RuntimeError("history: records still unsent after 60 s")
            if failed_commits:
                raise RuntimeError(f"history: {len(failed_commits)} commits failed, e.g. {failed_commits[0]}")
        finally:
            committer.close()
        return history

    # -- the measurements ----------------------------------------------------------------------
    def join(self, history: History) -> Join:
        """Time one assignment of a fresh exactly-once consumer, built as consumer.py builds it."""
        args = consumer_script.parse_args(
            [
                "--bootstrap-servers",
                self.bootstrap,
                "--topic",
                history.orders,
                "--dlq-topic",
                history.dlq,
                "--stats-topic",
                history.stats,
                "--group-id",
                history.group,
                "--exactly-once",
                "--failure-rate",
                "0",
                "--quiet",
            ]
        )
        consumer = Consumer(consumer_script.consumer_config(self.bootstrap, args.group_id, exactly_once=True))
        # As consumer.py's main() does before subscribing: this also connects the consumer.
        if not consumer_script.topics_ready(consumer, args, threading.Event()):
            raise RuntimeError("topics not ready")
        processor = consumer_script.make_processor(consumer, codec, args)
        assert isinstance(processor, ExactlyOnceProcessor)
        committed: list[TopicPartition] = []
        restore = processor.restore

        def recording_restore(partitions: list[TopicPartition]) -> list[TopicPartition]:
            offsets = restore(partitions)
            committed.extend(offsets)
            return offsets

        processor.restore = recording_restore  # type: ignore[method-assign]
        times: dict[str, float] = {}

        def on_assign(c: Consumer, partitions: list[TopicPartition]) -> None:
            times["on_assign"] = time.perf_counter()
            processor.on_assign(c, partitions)
            times["assigned"] = time.perf_counter()

        try:
            started = time.perf_counter()
            consumer.subscribe([history.orders], on_assign=on_assign, on_revoke=processor.on_revoke)
            deadline = started + JOIN_TIMEOUT_S
            while "assigned" not in times:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"no assignment within {JOIN_TIMEOUT_S:.0f} s")
                consumer.poll(0.01)  # serves the rebalance; no record is left to fetch
            restored = {
                tp.partition: (tp.offset, processor.committed[(tp.topic, tp.partition)]) for tp in committed
            }
            processor.finish(clean=True)
        finally:
            consumer.close()  # leaves the group: the next join starts from an empty group
            processor.producer.close()
        return Join(times["assigned"] - started, times["assigned"] - times["on_assign"], restored)

    def read_stats(self, history: History) -> tuple[float, int]:
        """One full read of the stats topic, as the old restore did on every assignment."""
        started = time.perf_counter()
        records = sum(1 for _ in read_topic(self.bootstrap, history.stats, timeout_s=300))
        return time.perf_counter() - started, records

    def cleanup(self) -> None:
        if self.groups:
            for future in self.admin.delete_consumer_groups(self.groups).values():
                try:
                    future.result(30)
                except KafkaException as exc:
                    # A group that never committed is gone once its last consumer left: fine.
                    if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
                        print(f"warning: group not deleted: {exc}", file=sys.stderr)
        if self.topics:
            for future in self.admin.delete_topics(self.topics).values():
                future.result(30)


def check(history: History, join: Join, partitions: int) -> None:
    """Every partition's restored aggregate and offset must be the last ones committed for it."""
    if sorted(join.restored) != list(range(partitions)):
        raise SystemExit(
            f"restore FAILED after {history.commits:,} commits: assigned {sorted(join.restored)}"
        )
    for partition, (offset, aggregate) in join.restored.items():
        expected_offset, expected = history.last.get(partition, (None, RunningAverage()))
        if aggregate != expected or (expected_offset is not None and offset != expected_offset):
            raise SystemExit(
                f"restore FAILED after {history.commits:,} commits, partition {partition}: restored "
                f"{aggregate} at offset {offset}, last committed {expected} at offset {expected_offset}"
            )


def timed(label: str, action: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = action()
    print(f"  {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return result


def main() -> int:
    args = parse_args()
    bench = RestoreBench(args.bootstrap_servers, args.partitions)
    rows: list[tuple[str, ...]] = []
    started = time.perf_counter()
    try:
        for commits in args.commits:
            print(f"{commits:,} commits:", file=sys.stderr)
            history = timed("history written", partial(bench.history, commits))
            joins: list[Join] = []
            for _ in range(JOINS):
                joins.append(bench.join(history))
                check(history, joins[-1], args.partitions)
            reads = [bench.read_stats(history) for _ in range(READS)]
            records = {count for _, count in reads}
            if records != {commits}:
                raise SystemExit(f"stats topic holds {records} snapshot records, expected {commits:,}")
            (snapshots,) = records
            restored = sum(aggregate.count for _, aggregate in joins[0].restored.values())
            rows.append(
                (
                    f"{commits:,}",
                    f"{snapshots:,}",
                    f"{statistics.median(j.seconds for j in joins):.3f}",
                    " / ".join(f"{j.seconds:.3f}" for j in joins),
                    f"{statistics.median(j.on_assign_seconds for j in joins) * 1000:.1f}",
                    f"{restored:,}",
                    f"{statistics.median(seconds for seconds, _ in reads):.3f}",
                )
            )
            print(f"  joins {rows[-1][3]} s; stats read {rows[-1][6]} s", file=sys.stderr)
    finally:
        timed("topics and groups deleted", bench.cleanup)
    print(format_table(rows))
    print(
        f"orders topic: {args.partitions} partition(s); one order, one snapshot and one commit per "
        f"history step; assignment = subscribe() to the end of on_assign, median of {JOINS} joins, "
        f"each by a fresh consumer; stats read = read_topic() over the whole stats topic, median of {READS}"
    )
    print(f"total run time {time.perf_counter() - started:.0f} s")
    return 0


def format_table(rows: list[tuple[str, ...]]) -> str:
    header = (
        "commits",
        "snapshot records",
        "assignment s (median)",
        "3 joins s",
        "on_assign ms",
        "restored count",
        "read stats topic s",
    )
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if i != 3 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
