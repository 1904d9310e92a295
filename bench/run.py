"""Benchmark the order system against Kafka's own perf tools on the same broker: one table, one chart.

Needs a running broker (bin/kafka-local start). Each row names its anchor and the ratio to it.
Throughput of the project's scripts is measured as N / (time for N orders - time for none), so
Python start-up, group join and the idle timeout cancel out; every throughput row is the median
of three runs. Each measure lives in a module of its own: throughput, latency, memory, chart.

Examples:
  python -m bench.run                    # 200,000 orders, 1M for the memory row (several minutes)
  python -m bench.run --quick --json bench.json --chart /tmp/bench.png
  python -m bench.run --schema-registry http://localhost:8081/apis/ccompat/v7   # + registry rows
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from itertools import islice
from pathlib import Path

from bench import latency, memory, registry, throughput
from bench.chart import draw
from bench.common import REPO, Broker, Row, format_table, machine, median_of_3, ratio
from kafka_project.cli import add_env_flag, make_parser
from kafka_project.consumer.consumer import CONSUMER_TUNING
from kafka_project.order_codec import OrderCodec
from kafka_project.producer.producer import random_orders

codec = OrderCodec()
ONE_AT_A_TIME = ("--max-in-flight", "1")
# The shortest loop also runs with the consumer's one setting that is not librdkafka's default.
FETCH_QUEUE_BACKOFF_MS = CONSUMER_TUNING["fetch.queue.backoff.ms"]
FAILURE_RATES = ("0", "0.1", "0.3", "0.5")  # the chart's x axis; 0.3 is the default


def parse_args() -> argparse.Namespace:
    parser = make_parser(__doc__, common_args=False)
    add_env_flag(parser, "--bootstrap-servers", "KAFKA_BOOTSTRAP_SERVERS", "localhost:9092", "Kafka brokers")
    add_env_flag(
        parser, "--schema-registry", "SCHEMA_REGISTRY_URL", "", "Schema Registry for the registry-format rows"
    )
    parser.add_argument("--quick", action="store_true", help="every row at a tenth of the size")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    parser.add_argument(
        "--chart",
        type=Path,
        default=REPO / "docs/bench.png",
        metavar="PATH",
        help="the PNG (default %(default)s)",
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    broker = Broker(args.bootstrap_servers, 0.1 if args.quick else 1.0)
    orders = broker.size(200_000)
    slow_orders = broker.size(300)  # one order at a time: about 22/s at the default failure rate
    rows: list[Row] = []
    figures: dict = {"machine": machine(), "orders": orders}

    # -- producer ------------------------------------------------------------------------------
    topic = broker.topic("orders")  # filled by the runs below: the consumer rows read it
    figures["producer_orders_per_s"] = median_of_3(
        lambda: throughput.producer_rate(broker, topic, orders // 3)
    )
    missing = orders - 3 * (orders // 3)
    if missing:
        throughput.producer_rate(broker, topic, missing)
    record_size = round(statistics.mean(len(codec.encode(o)) for o in islice(random_orders(1), 1000)))
    figures["producer_anchor_per_s"] = median_of_3(
        lambda: throughput.producer_anchor(broker, orders, record_size)
    )
    rows.append(
        (
            f"producer, {orders // 3:,} orders of ~{record_size} B (orders/s)",
            f"{figures['producer_orders_per_s']:,.0f}",
            f"ProducerPerformance {figures['producer_anchor_per_s']:,.0f}",
            ratio(figures["producer_orders_per_s"], figures["producer_anchor_per_s"]),
        )
    )

    # -- consumer at failure rate 0: the cost of the guarantees --------------------------------
    no_failures = ("--failure-rate", "0")
    figures["consumer_orders_per_s"] = median_of_3(
        lambda: throughput.consumer_rate(broker, topic, orders, *no_failures)
    )
    figures["shortest_loop_per_s"] = median_of_3(lambda: throughput.shortest_loop(broker, topic, orders))
    figures["shortest_loop_tuned_per_s"] = median_of_3(
        lambda: throughput.shortest_loop(broker, topic, orders, **CONSUMER_TUNING)
    )
    figures["consumer_anchor_per_s"] = median_of_3(lambda: throughput.consumer_anchor(broker, topic, orders))
    ours = figures["consumer_orders_per_s"]
    rows += [
        (
            f"consumer, failure rate 0, {orders:,} orders (orders/s)",
            f"{ours:,.0f}",
            f"shortest loop {figures['shortest_loop_per_s']:,.0f}",
            ratio(ours, figures["shortest_loop_per_s"]),
        ),
        (
            "",
            "",
            f"same loop, fetch.queue.backoff.ms={FETCH_QUEUE_BACKOFF_MS} "
            f"{figures['shortest_loop_tuned_per_s']:,.0f}",
            ratio(ours, figures["shortest_loop_tuned_per_s"]),
        ),
        (
            "",
            "",
            f"ConsumerPerformance {figures['consumer_anchor_per_s']:,.0f}",
            ratio(ours, figures["consumer_anchor_per_s"]),
        ),
    ]

    # -- consumer at the default failure rate and backoff --------------------------------------
    concurrent = median_of_3(lambda: throughput.consumer_rate(broker, topic, orders))
    exactly_once = median_of_3(lambda: throughput.consumer_rate(broker, topic, orders, "--exactly-once"))
    slow_topic = broker.produce(slow_orders)
    one_at_a_time = median_of_3(
        lambda: throughput.consumer_rate(broker, slow_topic, slow_orders, *ONE_AT_A_TIME)
    )
    figures.update(
        default_orders_per_s=concurrent,
        exactly_once_orders_per_s=exactly_once,
        one_at_a_time_orders_per_s=one_at_a_time,
        exactly_once_ratio=exactly_once / concurrent,
    )
    rows += [
        (
            "consumer, failure rate 0.3, defaults (orders/s)",
            f"{concurrent:,.0f}",
            f"one at a time {one_at_a_time:,.1f}",
            ratio(concurrent, one_at_a_time),
        ),
        (
            "consumer, failure rate 0.3, --exactly-once (orders/s)",
            f"{exactly_once:,.0f}",
            "at-least-once, defaults",
            ratio(exactly_once, concurrent),
        ),
    ]

    # -- the chart's throughput curves (single runs) -------------------------------------------
    by_failure_rate: dict[str, dict[str, float]] = {"concurrent (default)": {}, "one at a time": {}}
    for rate in FAILURE_RATES:
        flags = ("--failure-rate", rate)
        by_failure_rate["concurrent (default)"][rate] = (
            concurrent if rate == "0.3" else throughput.consumer_rate(broker, topic, orders, *flags)
        )
        by_failure_rate["one at a time"][rate] = (
            one_at_a_time
            if rate == "0.3"
            else throughput.consumer_rate(broker, slow_topic, slow_orders, *flags, *ONE_AT_A_TIME)
        )
    figures["orders_per_s_by_failure_rate"] = by_failure_rate

    # -- end-to-end latency --------------------------------------------------------------------
    figures["e2e_ms"] = {}
    for per_s in (1000, 10_000):
        for failure_rate in (0.0, 0.3):
            result = latency.latency(broker, per_s, 10 * broker.scale, failure_rate)
            name = f"{per_s:,}/s, failure rate {failure_rate:g}"
            figures["e2e_ms"][name] = result
            rows.append(
                (
                    f"end-to-end latency at {name} (achieved {result['achieved_rate']:,}/s)",
                    f"p50 {result['p50']:.1f} / p99 {result['p99']:.1f} / max {result['max']:.1f} ms",
                    "target p99 <= 20 ms at failure rate 0" if not failure_rate else "retries wait 0.1-0.3 s",
                    "",
                )
            )

    figures["encode_us"], figures["decode_us"] = registry.codec_us(codec)
    rows.append(
        (
            "Avro encode / decode (µs per order)",
            f"{figures['encode_us']:.2f} / {figures['decode_us']:.2f}",
            "",
            "",
        )
    )

    if args.schema_registry:
        rows += registry.measure(broker, args.schema_registry, orders, figures)
    else:
        rows.append(("Schema Registry format rows", "not measured: no --schema-registry", "", ""))

    # -- naive baselines (here only, never in the product) -------------------------------------
    naive = broker.size(20_000) // 10
    figures["naive_flush_per_produce_per_s"] = throughput.flush_every_produce(broker, naive)
    figures["naive_sync_commit_per_s"] = throughput.sync_commit_every_message(broker, topic, naive)
    rows += [
        (
            f"naive: flush after every produce ({naive:,} orders)",
            f"{figures['naive_flush_per_produce_per_s']:,.0f}",
            "our producer",
            ratio(figures["naive_flush_per_produce_per_s"], figures["producer_orders_per_s"]),
        ),
        (
            f"naive: sync commit after every message ({naive:,})",
            f"{figures['naive_sync_commit_per_s']:,.0f}",
            "our consumer",
            ratio(figures["naive_sync_commit_per_s"], ours),
        ),
    ]

    # -- memory --------------------------------------------------------------------------------
    million = broker.size(1_000_000)
    big = broker.produce(million, "memory")
    small = broker.size(10_000)
    figures["rss_mb_10k"], figures["rss_mb_1m"] = memory.consumer_rss(broker, big, [small, million])
    rows.append(
        (
            f"consumer RSS after {small:,} / {million:,} orders, failure rate 0.3",
            f"{figures['rss_mb_10k']:.0f} / {figures['rss_mb_1m']:.0f} MB",
            "must stay flat",
            ratio(figures["rss_mb_1m"], figures["rss_mb_10k"]),
        )
    )

    large = broker.size(10_000)
    large_topic = memory.large_records_topic(broker, large)
    figures["rss_mb_outage_large"] = memory.outage_rss(broker, large_topic, seconds=5 + 15 * broker.scale)
    rows.append(
        (
            f"consumer RSS, {large:,} records of {len(memory.PADDING) // 1024} KB, every try failing",
            f"{figures['rss_mb_outage_large']:.0f} MB",
            "--max-in-flight-bytes 32 MiB",
            "bounded",
        )
    )

    poison = broker.size(1_500)
    figures["rss_mb_poison"] = memory.poison_rss(broker, memory.poison_topic(broker, poison))
    rows.append(
        (
            f"consumer RSS, {poison:,} poison records of {len(memory.POISON) // 1000} KB, all to the DLQ",
            f"{figures['rss_mb_poison']:.0f} MB",
            "DLQ queue 32 MiB",
            "bounded",
        )
    )

    print(format_table(rows))
    print(f"machine: {figures['machine']}; broker: local Kafka 3.9.2 on the same machine")
    draw(by_failure_rate, {name: figures["e2e_ms"][name] for name in figures["e2e_ms"]}, args.chart)
    print(f"chart: {args.chart}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
