"""The whole system through its scripts, as a user runs them, on a real broker."""

from collections import Counter
from decimal import Decimal

import pytest

from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.order_codec import OrderCodec
from kafka_project.registry import SchemaRegistry

from .conftest import (
    committed_offset,
    consumer_args,
    expected_aggregate,
    headers_of,
    orders_to_count,
    produce_orders,
    records,
    run_ok,
    run_script,
    summary,
)

codec = OrderCodec()
ORDERS = 1000


@pytest.mark.parametrize("wire_format", ["single-object", "schema-registry"])
def test_thousand_orders_are_each_counted_or_dead_lettered(bootstrap_servers, topics, wire_format, request):
    url = request.getfixturevalue("schema_registry") if wire_format == "schema-registry" else None
    registry_args = ["--schema-registry", url] if url else []
    codec = OrderCodec(schema_registry=SchemaRegistry(url, {}) if url else None)
    produce_orders(topics.orders, ORDERS, "--seed", "42", *registry_args)

    consumed = run_script(
        "consumer",
        *consumer_args(
            topics,
            "--failure-rate",
            "0.3",
            "--seed",
            "7",
            "--retry-backoff",
            "0",
            "--idle-timeout",
            "5",
            "--quiet",
            *registry_args,
        ),
    )
    assert consumed.returncode == 0, consumed.stderr
    result = summary(consumed)

    originals = {msg.offset(): msg for msg in records(bootstrap_servers, topics.orders)}
    dead = records(bootstrap_servers, topics.dlq)
    assert len(originals) == ORDERS
    marker = b"\x00" if registry_args else b"\xc3\x01"
    assert all(msg.value().startswith(marker) for msg in originals.values())
    assert int(result["processed"]) + int(result["dlq"]) == ORDERS
    assert int(result["dlq"]) == len(dead) > 0  # 0.3^3: about 27 of 1000 expected

    dead_offsets = Counter(int(headers_of(msg)["dlq.original.offset"]) for msg in dead)
    assert max(dead_offsets.values()) == 1, "an order was dead-lettered twice"
    for msg in dead:
        headers = headers_of(msg)
        original = originals[int(headers["dlq.original.offset"])]
        assert msg.value() == original.value()  # byte for byte
        assert msg.key() == original.key()
        assert headers["dlq.original.topic"] == topics.orders
        assert headers["dlq.original.partition"] == "0"
        assert headers["dlq.original.timestamp"] == str(original.timestamp()[1])
        assert headers["dlq.error.type"] == "TemporaryProcessingError"
        assert headers["dlq.error.message"] == "Temporary processing failure"
        assert headers["dlq.attempts"] == "3"
        assert headers["dlq.consumer.group"] == topics.group

    expected = expected_aggregate(orders_to_count(bootstrap_servers, topics, codec))
    assert int(result["processed"]) == expected.count
    assert Decimal(result["total"]) == expected.total_price
    assert Decimal(result["avg"]) == expected.avg
    assert int(result["retries"]) > 0
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == ORDERS


def test_demo_output_matches_the_seed(bootstrap_servers, topics):
    produced = run_ok(
        "producer", "--topic", topics.orders, "--count", "3", "--interval", "0.2", "--seed", "5"
    )
    lines = produced.stdout.splitlines()
    assert lines[:2] == ["Starting Kafka Producer...", f"Sending orders to '{topics.orders}' topic"]
    sent = [line for line in lines if line.startswith("Sent order: {'orderId': 'ORD-")]
    assert len(sent) == 3
    assert lines.count(f"Message delivered to {topics.orders} [0]") == 3

    consumed = run_script(
        "consumer",
        *consumer_args(
            topics,
            "--failure-rate",
            "1",
            "--max-attempts",
            "2",
            "--retry-backoff",
            "0",
            "--idle-timeout",
            "3",
        ),
    )
    out = consumed.stdout
    assert out.startswith(f"Starting Kafka Consumer...\nListening for orders on '{topics.orders}' topic\n")
    first_id = sent[0].split("'orderId': '")[1].split("'")[0]
    assert (
        f"{sent[0].replace('Sent', 'Received')}\n"
        "  Attempt 1/2 failed: Temporary processing failure\n"
        "  Attempt 2/2 failed: Temporary processing failure\n"
        "Permanent failure\n"
    ) in out
    assert f"Moved to DLQ: orderId {first_id}\n" in out
    assert summary(consumed) == {"processed": "0", "dlq": "3", "retries": "3", "total": "0.00", "avg": "0.00"}

    listing = run_script("dlq", "list", "--topic", topics.dlq)
    assert listing.returncode == 0, listing.stderr
    assert f"order: {sent[0].removeprefix('Sent order: ')}" in listing.stdout
    assert "dlq.error.type: TemporaryProcessingError" in listing.stdout
    assert listing.stdout.rstrip().endswith(f"3 record(s) in {topics.dlq}")


def test_successful_processing_prints_the_running_average(bootstrap_servers, topics):
    produce_orders(topics.orders, 2, "--seed", "11")
    prices = [codec.decode(msg.value()).price for msg in records(bootstrap_servers, topics.orders)]
    consumed = run_script("consumer", *consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "3"))
    total = sum(prices)
    average = RunningAverage(2, total).avg
    assert f"✓ Processing successful\nRunning Average: ${prices[0]} (Total: ${prices[0]}, Count: 1)\n" in (
        consumed.stdout
    )
    assert f"Running Average: ${average} (Total: ${total}, Count: 2)\n" in consumed.stdout
