"""A real Kafka broker for the integration tests, and helpers to run the scripts as a user does.

The broker is the one at KAFKA_BOOTSTRAP_SERVERS if set; otherwise bin/kafka-local starts (or
reuses) a ZooKeeper-backed Apache Kafka on localhost:9092. Every test gets its own topics.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_project.cluster import read_topic
from kafka_project.consumer import consumer
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.processor import OrderProcessor
from kafka_project.order_codec import Order, OrderCodec

from ..environment import clean_env
from ..topics import create_order_topics
from ..workers import registry_port, worker_number

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "producer": REPO / "kafka_project/producer/producer.py",
    "consumer": REPO / "kafka_project/consumer/consumer.py",
    "dlq": REPO / "kafka_project/dlq/dlq_producer.py",
    "consumer_stats": REPO / "kafka_project/consumer/stats.py",
    "share_consumer": REPO / "kafka_project/consumer/share_consumer.py",
}


WORKER = worker_number()
REGISTRY_ENV = {  # a registry of this worker's own: a test stops it
    "SCHEMA_REGISTRY_PORT": str(registry_port(WORKER)),
    "KAFKA_LOCAL_DIR": str(
        REPO / ".local-kafka" / (f"test-gw{WORKER}" if WORKER is not None else "test-registry")
    ),
}


def schema_registry_local(action: str) -> str:
    """bin/schema-registry-local for the tests' own registry (its own port and data, so that a
    test may stop it); what it prints (the URL, for start)."""
    result = subprocess.run(
        [REPO / "bin/schema-registry-local", action],
        env=clean_env(**REGISTRY_ENV),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[str]:
    """The URL of a real Schema Registry (Apicurio, Confluent's API), started for the tests and
    deleted afterwards."""
    url = schema_registry_local("start")
    yield url
    schema_registry_local("reset")


@dataclass
class Topics:
    orders: str
    dlq: str
    group: str
    stats: str


@pytest.fixture
def topics(bootstrap_servers: str, request: pytest.FixtureRequest) -> Iterator[Topics]:
    """Fresh orders and DLQ topics (and a group id) for one test, deleted afterwards."""
    suffix = f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
    names = Topics(f"orders-{suffix}", f"orders-dlq-{suffix}", f"group-{suffix}", f"orders-stats-{suffix}")
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    create_order_topics(admin, names.orders, names.dlq, names.stats)
    yield names
    for future in admin.delete_topics([names.orders, names.dlq, names.stats]).values():
        future.result(30)


def run_script(name: str, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run a script exactly as the README does, `python path/to/script.py ...`."""
    return subprocess.run(
        [sys.executable, "-u", SCRIPTS[name], *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=clean_env(**env),
    )


def start_script(
    name: str,
    *args: str,
    stdout_path: Path | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    python_flags: Sequence[str] = ("-u",),
) -> subprocess.Popen:
    """Start a script as the README runs it, in the tests' clean environment. With stdout_path,
    stdout and stderr both go to that file; otherwise to `stdout` and `stderr` (pipes, DEVNULL).
    The reap_processes fixture kills it if the test leaves it running."""
    command = [sys.executable, *python_flags, SCRIPTS[name], *args]
    if stdout_path is None:
        return subprocess.Popen(command, stdout=stdout, stderr=stderr, cwd=REPO, env=clean_env())
    with open(stdout_path, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())


def summary(result: subprocess.CompletedProcess | str) -> dict[str, str]:
    """The fields of the script's last line, `Summary: a=1 b=2`."""
    text = result if isinstance(result, str) else result.stdout
    last = [line for line in text.splitlines() if line.startswith("Summary: ")]
    assert last, f"no Summary line in output:\n{text}\n{getattr(result, 'stderr', '')}"
    return dict(field.split("=", 1) for field in last[-1].removeprefix("Summary: ").split())


def produce_orders(topic: str, count: int, *extra: str, interval: float = 0) -> None:
    """`count` orders on `topic` through the producer script, every one acknowledged: the one way
    a test fills a topic with orders (extra: --seed, --customers, --schema-registry, ...)."""
    args = ("--topic", topic, "--count", str(count), "--interval", str(interval), "--quiet", *extra)
    result = run_script("producer", *args)
    assert result.returncode == 0, result.stderr
    assert summary(result) == {"sent": str(count), "delivered": str(count), "failed": "0"}, result.stderr


def run_ok(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """run_script for a run that must succeed: a failure names its stderr where it happened."""
    result = run_script(name, *args, timeout=timeout)
    assert result.returncode == 0, f"{name} exited {result.returncode}: {result.stderr}"
    return result


def orders_to_count(
    bootstrap_servers: str,
    topics: Topics,
    codec: OrderCodec | None = None,
    dlq_copies_may_repeat: bool = False,
) -> list[Order]:
    """The orders a consumer must count: every one of the source topic that is not in the DLQ.
    The DLQ holds each original once, unless at-least-once copies may repeat (a kill after a DLQ
    write and before its commit). `codec` reads Schema Registry records too when it has one."""
    dead = [int(headers_of(msg)["dlq.original.offset"]) for msg in records(bootstrap_servers, topics.dlq)]
    if not dlq_copies_may_repeat:
        assert len(set(dead)) == len(dead), "a DLQ copy repeats"
    decoder, dead_offsets = codec or OrderCodec(), set(dead)
    originals = records(bootstrap_servers, topics.orders)
    return [decoder.decode(msg.value()) for msg in originals if msg.offset() not in dead_offsets]


def expected_aggregate(orders: Sequence[Order]) -> RunningAverage:
    return RunningAverage(len(orders), sum((order.price for order in orders), Decimal("0.00")))


def records(bootstrap_servers: str, topic: str) -> list[Message]:
    return list(read_topic(bootstrap_servers, topic))


def headers_of(msg: Message) -> dict[str, str]:
    return {name: value.decode() for name, value in msg.headers() or []}


@contextmanager
def committed_reader(bootstrap_servers: str, group: str) -> Iterator[Callable[..., TopicPartition]]:
    """committed(topic, partition=0): the group's committed offset, with its metadata, read again
    on every call through one Consumer that is kept open (it never joins the group)."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group})

    def committed(topic: str, partition: int = 0) -> TopicPartition:
        return consumer.committed([TopicPartition(topic, partition)], timeout=10)[0]

    try:
        yield committed
    finally:
        consumer.close()


@contextmanager
def committed_offset_reader(bootstrap_servers: str, group: str) -> Iterator[Callable[[str], int]]:
    """committed(topic): as committed_reader, the offset alone."""
    with committed_reader(bootstrap_servers, group) as committed:
        yield lambda topic: committed(topic).offset


def committed_offset(bootstrap_servers: str, group: str, topic: str, partition: int = 0) -> int:
    with committed_reader(bootstrap_servers, group) as committed:
        return committed(topic, partition).offset


T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call condition every `interval` s until it returns something truthy, and return that.
    The timeout only bounds a failure: an AssertionError naming `what` once it has passed."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return result


def consumer_args(topics: Topics, *extra: str) -> list[str]:
    return [
        "--topic",
        topics.orders,
        "--dlq-topic",
        topics.dlq,
        "--group-id",
        topics.group,
        "--stats-topic",
        topics.stats,
        *extra,
    ]


def consume_in_process(
    args: argparse.Namespace,
    prepare: Callable[[OrderProcessor], None] = lambda processor: None,
    between_batches: Callable[[OrderProcessor], None] = lambda processor: None,
    producer_class: type[Producer] = Producer,
) -> OrderProcessor:
    """The consumer script (consumer.consume, as main runs it), in this process, until
    --idle-timeout: `prepare` may wrap the processor's methods before it starts, `between_batches`
    runs before each poll. Returns the processor, finished and closed."""
    built: list[OrderProcessor] = []

    def build(kafka_consumer: Consumer, codec: OrderCodec, args: argparse.Namespace) -> OrderProcessor:
        processor = consumer.make_processor(kafka_consumer, codec, args, producer_class)
        prepare(processor)
        built.append(processor)
        return processor

    assert consumer.consume(args, threading.Event(), build, lambda: between_batches(built[0])) == 0
    assert built, "the consumer stopped before it subscribed (were its topics there?)"
    return built[0]


def kafka_offsets(bootstrap_servers: str, topics: Topics) -> list[TopicPartition]:
    """The group's committed offsets, with the aggregate in their metadata."""
    with committed_reader(bootstrap_servers, topics.group) as committed:
        return [committed(topics.orders)]
