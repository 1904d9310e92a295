"""Orders per second: the project's producer and consumer, each against its anchor."""

from __future__ import annotations

import io
import re
import time
import uuid
from decimal import Decimal

import fastavro
from confluent_kafka import Consumer, Producer

from bench.common import REPO, Broker, timed
from kafka_project.consumer.consumer import consumer_config
from kafka_project.order_codec import HEADER_SIZE, OrderCodec
from kafka_project.producer.producer import producer_config, random_orders

codec = OrderCodec()


def producer_rate(broker: Broker, topic: str, count: int, *flags: str) -> float:
    """N / (time for N orders - time for none): Python start-up and connecting cancel out."""
    with_orders = timed([*broker.producer_command(topic, count), *flags])[0]
    without = timed([*broker.producer_command(topic, 0), *flags])[0]
    return count / (with_orders - without)


def kafka_tool(tool: str, *args: str) -> str:
    """One of Kafka's own perf tools (org.apache.kafka.tools) on the broker's jars; its stdout."""
    return timed([REPO / "bin/kafka-run-class", f"org.apache.kafka.tools.{tool}", *args])[1]


def producer_anchor(broker: Broker, count: int, record_size: int) -> float:
    out = kafka_tool(
        "ProducerPerformance",
        "--topic",
        broker.topic("java-producer"),
        "--num-records",
        str(count),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={broker.bootstrap}",
        "acks=all",
        "linger.ms=5",
        "enable.idempotence=true",
    )
    return float(re.findall(r"records sent, ([\d.]+) records/sec", out)[-1])


def consumer_rate(broker: Broker, topic: str, count: int, *flags: str) -> float:
    """N / (time to consume N orders - time to consume none), both until a 1 s idle timeout."""
    empty = broker.topic("empty")
    with_orders = timed(broker.consumer_command(topic, "--idle-timeout", "1", *flags))[0]
    without = timed(broker.consumer_command(empty, "--idle-timeout", "1", *flags))[0]
    return count / (with_orders - without)


def consumer_anchor(broker: Broker, topic: str, count: int) -> float:
    out = kafka_tool(
        "ConsumerPerformance",
        "--bootstrap-server",
        broker.bootstrap,
        "--topic",
        topic,
        "--messages",
        str(count),
        "--group",
        f"bench-java-{uuid.uuid4().hex[:6]}",
        "--timeout",
        "60000",
    )
    header, values = [line for line in out.splitlines() if "," in line][-2:]
    row = dict(
        zip([h.strip() for h in header.split(",")], [v.strip() for v in values.split(",")], strict=True)
    )
    return float(row["fetch.nMsg.sec"])  # excludes the group join, as our N/(T_N - T_0) does


def shortest_loop(broker: Broker, topic: str, count: int, **settings: object) -> float:
    """The shortest consumer a user would write with the same libraries: batches, fastavro's
    schemaless_reader, sum the price; no retries, no DLQ, auto-commit at poll. First to last record.
    librdkafka's defaults unless `settings` say otherwise."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"bench-loop-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            **settings,
        }
    )
    consumer.subscribe([topic])
    schema, total, seen, started = codec.schema, Decimal(0), 0, 0.0
    while seen < count:
        for msg in consumer.consume(500, timeout=1.0):
            if msg.error():
                continue
            started = started or time.perf_counter()
            record = fastavro.schemaless_reader(io.BytesIO(msg.value()[HEADER_SIZE:]), schema, None)  # type: ignore[index]
            total += record["price"]  # type: ignore[call-overload, index, operator]
            seen += 1
    rate = count / (time.perf_counter() - started)
    consumer.close()
    return rate


def flush_every_produce(broker: Broker, count: int) -> float:
    """A naive producer, here only: one flush per order."""
    topic, producer = broker.topic("naive-flush"), Producer(producer_config(broker.bootstrap))
    orders = random_orders(1)
    started = time.perf_counter()
    for _ in range(count):
        order = next(orders)
        producer.produce(topic, key=order.order_id.encode(), value=codec.encode(order))
        producer.flush()
    return count / (time.perf_counter() - started)


def sync_commit_every_message(broker: Broker, topic: str, count: int) -> float:
    """A naive consumer, here only: one synchronous commit per record."""
    group = f"bench-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({**consumer_config(broker.bootstrap, group), "enable.auto.commit": False})
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
