"""The consumer's memory: over a long run at the default failure rate (retries and DLQ copies
included), and with large records that all wait for a retry, as in an outage of the payment call."""

from __future__ import annotations

import subprocess
import time
from decimal import Decimal
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import REPO, Broker
from kafka_project.cluster import produce
from kafka_project.order_codec import MAX_RECORD_BYTES, Order, OrderCodec

# Headers that bring a record near the largest an order's may be (MAX_RECORD_BYTES).
PADDING = b"x" * (MAX_RECORD_BYTES - 1024)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def consumer_rss(broker: Broker, topic: str, checkpoints: list[int]) -> list[float]:
    """RSS of the consumer script once its committed offset reaches each checkpoint."""
    command = broker.consumer_command(topic, "--idle-timeout", "3")
    group = str(command[command.index("--group-id") + 1])
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    # Never subscribes, so it reads the group's offsets without joining it.
    watcher = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    readings = []
    for checkpoint in checkpoints:
        while (
            watcher.committed([TopicPartition(topic, 0)], timeout=10)[0].offset < checkpoint
            and process.poll() is None
        ):
            time.sleep(0.1)
        readings.append(rss_mb(process.pid))
    process.wait(300)
    watcher.close()
    return readings


def large_records_topic(broker: Broker, count: int) -> str:
    topic = broker.topic("large")
    producer, codec = Producer({"bootstrap.servers": broker.bootstrap}), OrderCodec()
    for i in range(count):
        value = codec.encode(Order(f"ORD-LARGE-{i:06d}", "Laptop", Decimal("999.99")))
        produce(producer, topic, value=value, headers=[("padding", PADDING)])  # waits out a full queue
    producer.flush(60)
    return topic


def outage_rss(broker: Broker, topic: str, seconds: float) -> float:
    """The consumer's highest RSS while every try fails and each order waits for its
    next (3 and 6 s later): it holds what --max-in-flight-bytes lets it (32 MiB by default), then pauses."""
    command = broker.consumer_command(topic, "--failure-rate", "1", "--retry-backoff", "3")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    highest, deadline = 0.0, time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        highest = max(highest, rss_mb(process.pid))
        time.sleep(0.2)
    process.kill()
    process.wait(60)
    return highest


POISON = b"\xc3\x01" + bytes(900_000)  # a single-object marker, then nothing an order can be


def poison_topic(broker: Broker, count: int) -> str:
    topic = broker.topic("poison")
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(count):
        produce(producer, topic, key=str(i).encode(), value=POISON)
    producer.flush(120)
    return topic


def poison_rss(broker: Broker, topic: str) -> float:
    """The consumer's highest RSS while it sends every record of the topic, each poison, to the
    DLQ: the copies waiting in librdkafka's queue are bounded (DLQ_QUEUE_KBYTES), not the backlog."""
    command = broker.consumer_command(topic, "--idle-timeout", "3")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL)
    highest = 0.0
    while process.poll() is None:
        highest = max(highest, rss_mb(process.pid))
        time.sleep(0.2)
    return highest
