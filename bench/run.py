"""Benchmark the order system against Kafka's own perf tools on the same broker, and print one table.

Needs a running broker (bin/kafka-local start). Each row names its anchor and the ratio to it.
Throughput of the project's scripts is measured as N / (time for N orders - time for none), so
Python start-up, group join and the idle timeout cancel out; every throughput row is the median
of three runs.

Examples:
  python bench/run.py                   # 200,000 orders, 1M for the memory row (a few minutes)
  python bench/run.py --quick --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import timeit
import uuid
from collections.abc import Callable
from decimal import Decimal
from itertools import islice
from pathlib import Path

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_project.cli import add_env_flag, make_parser
from kafka_project.consumer.consumer import (
    consume_until_stopped,
    consumer_config,
)
from kafka_project.consumer.consumer import (
    parse_args as consumer_args,
)
from kafka_project.consumer.processor import AtLeastOnceProcessor
from kafka_project.dlq.dlq_producer import DeadLetterPublisher, dlq_producer_config
from kafka_project.order_codec import Order, OrderCodec
from kafka_project.producer.producer import producer_config, random_orders

REPO = Path(__file__).resolve().parents[1]
PRODUCER = REPO / "kafka_project/producer/producer.py"
CONSUMER = REPO / "kafka_project/consumer/consumer.py"
codec = OrderCodec()
Command = list[str | Path]  # what subprocess runs


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__, common_args=False)
    add_env_flag(parser, "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "Kafka brokers")
    parser.add_argument("--quick", action="store_true", help="every row at a tenth of the size")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    return parser.parse_args()


class Bench:
    def __init__(self, bootstrap: str, scale: float) -> None:
        self.bootstrap = bootstrap
        self.scale = scale
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    def size(self, full: int) -> int:
        return int(full * self.scale)

    def topic(self, name: str) -> str:
        topic = f"bench-{name}-{uuid.uuid4().hex[:6]}"
        for future in self.admin.create_topics([NewTopic(topic, 1, 1)]).values():
            future.result(30)
        return topic

    def timed(self, command: Command) -> tuple[float, str]:
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
        return time.perf_counter() - started, result.stdout

    # -- 1. producer ---------------------------------------------------------------------------
    def producer_command(self, topic: str, count: int, interval: float = 0) -> Command:
        """The project's producer as a user runs it, quiet."""
        return [sys.executable, PRODUCER, "--bootstrap-servers", self.bootstrap, "--topic", topic,
                "--count", str(count), "--interval", str(interval), "--quiet"]  # fmt: skip

    def producer_rate(self, count: int) -> float:
        """Into a fresh topic each time; the last, with exactly `count` orders, feeds the consumer rows."""
        self.orders_topic = self.topic("orders")
        with_orders = self.timed(self.producer_command(self.orders_topic, count))[0]
        without = self.timed(self.producer_command(self.orders_topic, 0))[0]
        return count / (with_orders - without)

    def producer_anchor(self, count: int, record_size: int) -> float:
        topic = self.topic("java-producer")
        _, out = self.timed(
            [
                REPO / "bin/kafka-run-class",
                "org.apache.kafka.tools.ProducerPerformance",
                "--topic",
                topic,
                "--num-records",
                str(count),
                "--record-size",
                str(record_size),
                "--throughput",
                "-1",
                "--producer-props",
                f"bootstrap.servers={self.bootstrap}",
                "acks=all",
                "linger.ms=5",
                "enable.idempotence=true",
            ]
        )
        return float(re.findall(r"records sent, ([\d.]+) records/sec", out)[-1])

    # -- 2. consumer ---------------------------------------------------------------------------
    def consumer_rate(self, topic: str, count: int, *extra: str) -> float:
        empty = self.topic("empty")
        stats = self.topic("stats")

        def run(source: str) -> float:
            command: Command = [
                sys.executable,
                CONSUMER,
                "--bootstrap-servers",
                self.bootstrap,
                "--topic",
                source,
                "--dlq-topic",
                self.topic("dlq"),
                "--stats-topic",
                stats,
                "--group-id",
                f"bench-{uuid.uuid4().hex[:6]}",
                "--failure-rate",
                "0",
                "--quiet",
                "--idle-timeout",
                "1",
                *extra,
            ]
            return self.timed(command)[0]

        return count / (run(topic) - run(empty))

    def consumer_anchor(self, topic: str, count: int) -> float:
        _, out = self.timed(
            [
                REPO / "bin/kafka-run-class",
                "org.apache.kafka.tools.ConsumerPerformance",
                "--bootstrap-server",
                self.bootstrap,
                "--topic",
                topic,
                "--messages",
                str(count),
                "--group",
                f"bench-java-{uuid.uuid4().hex[:6]}",
                "--timeout",
                "60000",
            ]
        )
        header, values = [line for line in out.splitlines() if "," in line][-2:]
        row = dict(
            zip([h.strip() for h in header.split(",")], [v.strip() for v in values.split(",")], strict=True)
        )
        return float(row["fetch.nMsg.sec"])  # excludes the group join, as our N/(T_N - T_0) does

    # -- 3. end-to-end latency -----------------------------------------------------------------
    def latency(self, rate: int, seconds: float) -> dict[str, float]:
        """Record timestamp -> the running average includes the order, at a steady producer rate."""
        topic, count = self.topic(f"latency-{rate}"), int(rate * seconds)
        latencies: list[float] = []
        stop = threading.Event()

        class TimedProcessor(AtLeastOnceProcessor):
            def count(self, msg: Message, order: Order) -> None:
                super().count(msg, order)
                latencies.append(time.time() * 1000 - msg.timestamp()[1])
                if len(latencies) >= count:
                    stop.set()

        args = consumer_args(
            [
                "--bootstrap-servers",
                self.bootstrap,
                "--topic",
                topic,
                "--failure-rate",
                "0",
                "--quiet",
                "--group-id",
                f"bench-{uuid.uuid4().hex[:6]}",
            ]
        )
        consumer = Consumer(consumer_config(self.bootstrap, args.group_id))
        dlq = DeadLetterPublisher(
            Producer(dlq_producer_config(self.bootstrap)), self.topic("dlq"), args.group_id
        )
        processor = TimedProcessor(consumer, dlq, codec, args)
        consumer.subscribe([topic], on_assign=processor.on_assign, on_revoke=processor.on_revoke)
        while not consumer.assignment():
            consumer.poll(0.1)
        worker = threading.Thread(target=consume_until_stopped, args=(consumer, processor, args, stop))
        worker.start()
        started = time.perf_counter()
        subprocess.run(
            self.producer_command(topic, count, 1 / rate), check=True, cwd=REPO, capture_output=True
        )
        achieved = count / (time.perf_counter() - started)
        stop.wait(60)
        stop.set()
        worker.join()
        consumer.close()
        latencies.sort()
        return {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": latencies[-1],
            "achieved_rate": round(achieved),
        }

    # -- 4. Avro -------------------------------------------------------------------------------
    @staticmethod
    def avro_us() -> tuple[float, float]:
        order = Order("ORD-3F2A9C1B-000042", "Headphones", Decimal("294.48"))
        value = codec.encode(order)
        runs = 100_000
        encode = min(timeit.repeat(lambda: codec.encode(order), number=runs, repeat=3)) / runs * 1e6
        decode = min(timeit.repeat(lambda: codec.decode(value), number=runs, repeat=3)) / runs * 1e6
        return encode, decode

    # -- 6. naive baselines (here only, never in the product) ----------------------------------
    def flush_every_produce(self, count: int) -> float:
        topic, producer = self.topic("naive-flush"), Producer(producer_config(self.bootstrap))
        orders = random_orders(1)
        started = time.perf_counter()
        for _ in range(count):
            order = next(orders)
            producer.produce(topic, key=order.order_id.encode(), value=codec.encode(order))
            producer.flush()
        return count / (time.perf_counter() - started)

    def sync_commit_every_message(self, topic: str, count: int) -> float:
        consumer = Consumer(
            {**consumer_config(self.bootstrap, f"bench-{uuid.uuid4().hex[:6]}"), "enable.auto.commit": False}
        )
        consumer.subscribe([topic])
        seen, started = 0, None
        while seen < count:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            started = started or time.perf_counter()
            codec.decode(msg.value())
            consumer.commit(message=msg, asynchronous=False)
            seen += 1
        assert started is not None  # count >= 1: the clock started at the first message
        rate = count / (time.perf_counter() - started)
        consumer.close()
        return rate

    # -- 7. memory -----------------------------------------------------------------------------
    def consumer_rss(self, topic: str, checkpoints: list[int]) -> list[float]:
        group = f"bench-{uuid.uuid4().hex[:6]}"
        process = subprocess.Popen(
            [
                sys.executable,
                CONSUMER,
                "--bootstrap-servers",
                self.bootstrap,
                "--topic",
                topic,
                "--dlq-topic",
                self.topic("dlq"),
                "--group-id",
                group,
                "--failure-rate",
                "0",
                "--quiet",
                "--idle-timeout",
                "3",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
        )
        watcher = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        readings = []
        for checkpoint in checkpoints:
            while (
                watcher.committed([TopicPartition(topic, 0)], timeout=10)[0].offset < checkpoint
                and process.poll() is None
            ):
                time.sleep(0.1)
            readings.append(rss_mb(process.pid))
        process.wait(120)
        watcher.close()
        return readings


def median_of_3(measure: Callable[[], float]) -> float:
    """Throughput rows are the median of three runs: a shared 2-core box is noisy."""
    return statistics.median(measure() for _ in range(3))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(sorted_values: list[float], pct: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {memory_gb:.0f} GiB, Python {platform.python_version()}"


def main() -> int:
    args = parse_args()
    bench = Bench(args.bootstrap_servers, 0.1 if args.quick else 1.0)
    orders = bench.size(200_000)
    rows: list[tuple[str, str, str, str]] = []  # what, ours, anchor, ratio
    figures: dict = {"machine": machine(), "orders": orders}

    figures["producer_orders_per_s"] = median_of_3(lambda: bench.producer_rate(orders))
    topic = bench.orders_topic
    record_size = round(statistics.mean(len(codec.encode(o)) for o in islice(random_orders(1), 1000)))
    figures["producer_anchor_per_s"] = median_of_3(lambda: bench.producer_anchor(orders, record_size))
    rows.append(
        (
            f"producer, {orders:,} orders of ~{record_size} B (orders/s)",
            f"{figures['producer_orders_per_s']:,.0f}",
            f"ProducerPerformance {figures['producer_anchor_per_s']:,.0f}",
            ratio(figures["producer_orders_per_s"], figures["producer_anchor_per_s"]),
        )
    )

    figures["consumer_orders_per_s"] = median_of_3(lambda: bench.consumer_rate(topic, orders))
    figures["consumer_anchor_per_s"] = median_of_3(lambda: bench.consumer_anchor(topic, orders))
    rows.append(
        (
            "consumer, at-least-once (orders/s)",
            f"{figures['consumer_orders_per_s']:,.0f}",
            f"ConsumerPerformance {figures['consumer_anchor_per_s']:,.0f}",
            ratio(figures["consumer_orders_per_s"], figures["consumer_anchor_per_s"]),
        )
    )

    eos_rate = median_of_3(lambda: bench.consumer_rate(topic, orders, "--exactly-once"))
    figures["exactly_once_orders_per_s"] = eos_rate
    figures["exactly_once_ratio"] = eos_rate / figures["consumer_orders_per_s"]
    rows.append(
        (
            "consumer, --exactly-once (orders/s)",
            f"{eos_rate:,.0f}",
            "at-least-once consumer",
            ratio(eos_rate, figures["consumer_orders_per_s"]),
        )
    )

    figures["e2e_ms"] = {}
    for rate in (1000, 10_000):
        result = bench.latency(rate, 10 * bench.scale if rate == 1000 else 5 * bench.scale)
        figures["e2e_ms"][str(rate)] = result
        rows.append(
            (
                f"end-to-end latency at {rate:,}/s (achieved {result['achieved_rate']:,}/s)",
                f"p50 {result['p50']:.1f} / p99 {result['p99']:.1f} / max {result['max']:.1f} ms",
                "target p99 <= 20 ms at 1,000/s",
                "",
            )
        )

    figures["encode_us"], figures["decode_us"] = bench.avro_us()
    rows.append(
        (
            "Avro encode / decode (µs per order)",
            f"{figures['encode_us']:.2f} / {figures['decode_us']:.2f}",
            "",
            "",
        )
    )

    naive = bench.size(20_000) // 10
    figures["naive_flush_per_produce_per_s"] = bench.flush_every_produce(naive)
    rows.append(
        (
            f"naive: flush after every produce ({naive:,} orders)",
            f"{figures['naive_flush_per_produce_per_s']:,.0f}",
            "our producer",
            ratio(figures["naive_flush_per_produce_per_s"], figures["producer_orders_per_s"]),
        )
    )
    figures["naive_sync_commit_per_s"] = bench.sync_commit_every_message(topic, naive)
    rows.append(
        (
            f"naive: sync commit after every message ({naive:,})",
            f"{figures['naive_sync_commit_per_s']:,.0f}",
            "our consumer",
            ratio(figures["naive_sync_commit_per_s"], figures["consumer_orders_per_s"]),
        )
    )

    million = bench.size(1_000_000)
    big = bench.topic("memory")
    subprocess.run(bench.producer_command(big, million), check=True, cwd=REPO, capture_output=True)
    small_checkpoint = bench.size(10_000)
    figures["rss_mb_10k"], figures["rss_mb_1m"] = bench.consumer_rss(big, [small_checkpoint, million])
    rows.append(
        (
            f"consumer RSS after {small_checkpoint:,} / {million:,} orders",
            f"{figures['rss_mb_10k']:.0f} / {figures['rss_mb_1m']:.0f} MB",
            "must stay flat",
            ratio(figures["rss_mb_1m"], figures["rss_mb_10k"]),
        )
    )

    print(format_table(rows))
    print(f"machine: {figures['machine']}; broker: local Kafka 3.9.2 on the same machine")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


def ratio(ours: float, anchor: float) -> str:
    return f"{ours / anchor:.2f}x"


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    cells = [("measure", "ours", "anchor", "ratio"), *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
