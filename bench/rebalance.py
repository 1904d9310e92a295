"""How long a consumer group stops when a member joins and when one leaves, per group protocol.

Three consumers share six partitions while orders stream in; a fourth joins, then one of the first
three leaves (SIGTERM, a clean leave). For each change: the longest time during which no partition
made progress (all stopped at once), and the longest any single partition waited. Orders are keyed
at random, so a partition waits ~0.15 s now and then with no rebalance at all: the "steady" column.

  python -m bench.rebalance --bootstrap-servers localhost:9092 --protocol classic --protocol consumer
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import CONSUMER, PRODUCER, REPO
from bench.progress import ProgressWatch
from kafka_project.cluster import read_topic
from kafka_project.dlq.headers import DLQ_TOPIC_CONFIG

PARTITIONS = 6
RATE = 300  # orders per second, 50 per partition
SETTLE_S = 8.0  # before the first change, and between the two
PROTOCOLS = ("classic", "classic-cooperative", "consumer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="\n".join(__doc__.splitlines()[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bootstrap-servers", default="localhost:9092")
    parser.add_argument(
        "--protocol", action="append", choices=PROTOCOLS, help="group protocols to measure (default: all)"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per protocol; the table shows medians")
    return parser.parse_args(argv)


class GroupRun:
    """One run: a fresh six-partition topic, a producer streaming into it, consumers joining and leaving."""

    def __init__(self, bootstrap: str, protocol: str, workdir: Path) -> None:
        self.bootstrap, self.protocol, self.workdir = bootstrap, protocol, workdir
        suffix = uuid.uuid4().hex[:6]
        self.topic, self.dlq, self.group = (
            f"bench-rebalance-{suffix}",
            f"bench-rebalance-dlq-{suffix}",
            suffix,
        )
        topics = [NewTopic(self.topic, PARTITIONS), NewTopic(self.dlq, 1, config=DLQ_TOPIC_CONFIG)]
        admin = AdminClient({"bootstrap.servers": bootstrap})  # kept until the topics exist
        for future in admin.create_topics(topics).values():
            future.result(30)
        self.consumers: list[subprocess.Popen] = []

    def start_consumer(self) -> subprocess.Popen:
        log = open(self.workdir / f"consumer-{len(self.consumers)}.log", "w")  # noqa: SIM115 - the child owns it
        process = subprocess.Popen(
            [
                *(sys.executable, "-u", CONSUMER, "--bootstrap-servers", self.bootstrap),
                *("--topic", self.topic, "--dlq-topic", self.dlq, "--group-id", self.group),
                *("--group-protocol", self.protocol, "--failure-rate", "0"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.consumers.append(process)
        return process

    def measure(self) -> dict[str, float]:
        watch = ProgressWatch(self.workdir, every_s=0.01)
        count = int(RATE * (4 * SETTLE_S + 5))
        producer = subprocess.Popen(
            [
                *(sys.executable, PRODUCER, "--bootstrap-servers", self.bootstrap, "--topic", self.topic),
                *("--count", str(count), "--interval", str(1 / RATE), "--quiet"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=REPO,
        )
        try:
            for _ in range(3):
                self.start_consumer()
            time.sleep(SETTLE_S)  # all three have joined
            steady_at = time.monotonic()
            time.sleep(SETTLE_S)
            joined_at = time.monotonic()
            self.start_consumer()
            time.sleep(SETTLE_S)
            left_at = time.monotonic()
            self.consumers[0].send_signal(signal.SIGTERM)
            time.sleep(SETTLE_S)
            ended_at = time.monotonic()
        finally:
            for process in [producer, *self.consumers]:
                process.send_signal(signal.SIGTERM)
            for process in [producer, *self.consumers]:
                process.wait(60)
            watch.stop()
        by_partition: dict[int, list[str]] = defaultdict(list)
        for msg in read_topic(self.bootstrap, self.topic):
            by_partition[msg.partition() or 0].append(bytes(msg.key() or b"").decode())
        every_id = [order_id for ids in by_partition.values() for order_id in ids]
        return {
            "steady: a partition waited": max(
                watch.longest_gap(ids, steady_at, until=joined_at) for ids in by_partition.values()
            ),
            "join: all stopped": watch.longest_gap(every_id, joined_at, until=left_at),
            "join: a partition waited": max(
                watch.longest_gap(ids, joined_at, until=left_at) for ids in by_partition.values()
            ),
            "leave: all stopped": watch.longest_gap(every_id, left_at, until=ended_at),
            "leave: a partition waited": max(
                watch.longest_gap(ids, left_at, until=ended_at) for ids in by_partition.values()
            ),
        }


def main(args: argparse.Namespace) -> int:
    rows = []
    for protocol in args.protocol or PROTOCOLS:
        runs = []
        for number in range(args.runs):
            with tempfile.TemporaryDirectory() as folder:
                runs.append(GroupRun(args.bootstrap_servers, protocol, Path(folder)).measure())
            print(f"{protocol} run {number + 1}: {runs[-1]}", file=sys.stderr, flush=True)
        rows.append((protocol, {key: statistics.median(run[key] for run in runs) for key in runs[0]}))
    keys = list(rows[0][1])
    print("| group protocol | " + " | ".join(f"{key} (s)" for key in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for protocol, figures in rows:
        print(f"| {protocol} | " + " | ".join(f"{figures[key]:.2f}" for key in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
