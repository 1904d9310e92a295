"""The DLQ holds every record its source topic can, and a DLQ that refuses one for good is one clear
error that commits nothing past it, never a loop."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from ..topics import set_topic_config
from .conftest import (
    Topics,
    committed_offset,
    consumer_args,
    headers_of,
    produce_orders,
    records,
    run_script,
    summary,
)

MODES = pytest.mark.parametrize("flags", [[], ["--exactly-once"]], ids=["at-least-once", "exactly-once"])


def produce_around(bootstrap_servers: str, topics: Topics, value: bytes) -> None:
    """Two orders, the given record at offset 2, then two more orders."""
    for count, seed in ((2, 1), (0, 0), (2, 2)):
        if count:
            produce_orders(topics.orders, count, "--seed", str(seed))
        else:
            producer = Producer({"bootstrap.servers": bootstrap_servers})
            producer.produce(topics.orders, key=b"big", value=value)
            assert producer.flush(30) == 0


@MODES
def test_a_record_as_large_as_the_source_takes_goes_to_the_dlq_unchanged(bootstrap_servers, topics, flags):
    big = b"\x8f" * 999_700  # under the source topic's default limit (about 1 MB), not an order
    produce_around(bootstrap_servers, topics, big)
    args = consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "3", "--quiet", *flags)
    result = run_script("consumer", *args, timeout=120)
    assert result.returncode == 0, result.stderr
    assert summary(result)["processed"] == "4"
    (dead,) = records(bootstrap_servers, topics.dlq)
    assert dead.value() == big and dead.key() == b"big"
    assert headers_of(dead)["dlq.original.offset"] == "2"
    assert headers_of(dead)["dlq.error.type"] == "UnknownSchemaError"
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 5  # every record done


@MODES
def test_a_dlq_that_refuses_a_record_for_good_stops_with_one_clear_line(bootstrap_servers, topics, flags):
    """A DLQ topic set up too small (max.message.bytes=2000) for a 5,000-byte poison record."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    set_topic_config(admin, topics.dlq, "max.message.bytes", "2000")
    produce_around(bootstrap_servers, topics, b"\x8f" * 5_000)
    args = consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "10", "--quiet", *flags)
    started = time.monotonic()
    result = run_script("consumer", *args, timeout=120)
    assert time.monotonic() - started < 60  # no loop: it stops at once
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert f"refused {topics.orders} [0] offset 2 (5000 bytes)" in errors[0]
    assert "max.message.bytes" in errors[0]
    assert "Traceback" not in result.stderr
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) <= 2
    assert records(bootstrap_servers, topics.dlq) == []
