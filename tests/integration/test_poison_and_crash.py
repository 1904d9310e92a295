"""Bad input and a killed consumer: nothing is lost, poison is dead-lettered once and never retried."""

import json
import signal
from decimal import Decimal

from confluent_kafka import Producer

from kafka_project.order_codec import Order, OrderCodec
from tests.faults.harness import successful_order_ids
from tests.poison import HOSTILE, VALID
from tests.poison import POISON as ALL_POISON

from .conftest import (
    committed_offset,
    committed_offset_reader,
    consumer_args,
    headers_of,
    records,
    run_ok,
    run_script,
    start_script,
    summary,
    wait_until,
)

codec = OrderCodec()
POISON = {
    **ALL_POISON,
    **HOSTILE,
    # A valid order in a record larger than an order's can be: orders waiting for a retry are held
    # in memory, and librdkafka's prefetch limit does not count headers.
    "order with 100 KB of headers": (VALID, "InvalidOrderError"),
}
HEADERS = {"order with 100 KB of headers": [("padding", b"x" * 100_000)]}


def test_poison_goes_to_the_dlq_once_without_retries(bootstrap_servers, topics):
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    sent = []  # (kind, value) in topic order: each poison record followed by a valid order
    for number, (kind, (value, _)) in enumerate(POISON.items()):
        good = codec.encode(Order(f"ORD-GOOD-{number}", "Phone", Decimal("20.00")))
        producer.produce(topics.orders, key=kind.encode(), value=value, headers=HEADERS.get(kind))
        producer.produce(topics.orders, key=f"ORD-GOOD-{number}".encode(), value=good)
        sent += [(kind, value), ("valid", good)]
    assert producer.flush(30) == 0

    consumed = run_script("consumer", *consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "5"))
    assert consumed.returncode == 0, consumed.stderr
    assert "Traceback" not in consumed.stderr
    assert summary(consumed) == {
        "processed": str(len(POISON)),
        "dlq": str(len(POISON)),
        "retries": "0",
        "total": f"{20 * len(POISON)}.00",
        "avg": "20.00",
    }
    assert "Attempt" not in consumed.stdout  # poison is never retried

    dead = records(bootstrap_servers, topics.dlq)
    assert len(dead) == len(POISON)
    for msg in dead:
        headers = headers_of(msg)
        kind, value = sent[int(headers["dlq.original.offset"])]
        assert msg.key().decode() == kind
        assert msg.value() == value
        assert msg.headers()[: len(HEADERS.get(kind, []))] == HEADERS.get(kind, [])
        assert headers["dlq.error.type"] == POISON[kind][1], kind
        assert headers["dlq.attempts"] == "0"
        assert headers["dlq.error.message"]
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == len(sent)


def test_consumer_killed_mid_stream_loses_nothing(bootstrap_servers, topics, tmp_path):
    produced = run_script(
        "producer", "--topic", topics.orders, "--count", "1000", "--interval", "0", "--seed", "3", "--quiet"
    )
    assert summary(produced)["delivered"] == "1000"
    all_ids = {msg.key().decode() for msg in records(bootstrap_servers, topics.orders)}

    # One order at a time with backoff 0.02 s: about 10 s for 1000 orders, so the kill lands
    # mid-stream (test_concurrent_retries kills a consumer with thousands of orders in progress).
    args = consumer_args(topics, "--failure-rate", "0.3", "--retry-backoff", "0.02", "--max-in-flight", "1")
    first_log = tmp_path / "first.log"
    with committed_offset_reader(bootstrap_servers, topics.group) as committed:
        first = start_script("consumer", *args, stdout_path=first_log)
        try:
            wait_until(
                lambda: first_log.read_text().count("Received order") >= 300,
                60,
                f"300 'Received order' lines in {first_log}",
            )
            wait_until(lambda: committed(topics.orders) > 0, 30, "the first consumer's first auto-commit")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            first.kill()  # after a failure above; a no-op once it is dead and reaped
        before_restart = committed(topics.orders)
        assert 0 < before_restart < 1000, "the kill should land mid-stream, after some commits"

        second = run_script("consumer", *args, "--idle-timeout", "5")
        (tmp_path / "second.log").write_text(second.stdout + second.stderr)
        assert second.returncode == 0, second.stderr
        counted = set(successful_order_ids(first_log.read_text() + second.stdout))
        dead = {msg.key().decode() for msg in records(bootstrap_servers, topics.dlq)}
        assert all_ids - counted - dead == set(), f"orders lost; consumer logs in {tmp_path}"
        assert committed(topics.orders) == 1000


def test_dlq_list_json_has_one_line_per_record_with_reason_and_headers(bootstrap_servers, topics):
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    producer.produce(topics.orders, key=b"k1", value=b"not avro")
    producer.produce(topics.orders, key=b"ORD-GOOD-1", value=VALID)
    assert producer.flush(30) == 0
    run_ok(
        "consumer",
        *consumer_args(
            topics, "--failure-rate", "1", "--max-attempts", "1", "--idle-timeout", "3", "--quiet"
        ),
    )
    listing = run_ok("dlq", "list", "--topic", topics.dlq, "--json")
    lines = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [line["offset"] for line in lines] == [0, 1]
    poison, order = lines
    assert poison["order"] is None and poison["not_an_order"].startswith("unknown schema")
    assert poison["headers"]["dlq.error.type"] == "UnknownSchemaError"
    assert order["order"] == {
        "orderId": "ORD-GOOD-1",
        "product": "Tablet",
        "price": "10.00",
        "customerId": None,
    }
    assert order["headers"]["dlq.attempts"] == "1"
    assert order["headers"]["dlq.original.offset"] == "1"


def test_stats_reads_past_snapshots_no_orders_add_up_to(bootstrap_servers, topics):
    """A snapshot total of 1e999999 or NaN crashed stats.py; each is one warning now."""
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    good = {"group": topics.group, "topic": topics.orders, "count": 2, "total": "30.10", "next_offset": 2}
    for partition, total in enumerate(["1e999999", "NaN", "30.10"]):
        snapshot = {**good, "partition": partition, "total": total}
        producer.produce(topics.stats, key=f"{partition}".encode(), value=json.dumps(snapshot).encode())
    assert producer.flush(30) == 0
    result = run_script("consumer_stats", "--stats-topic", topics.stats, "--group-id", topics.group)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {topics.stats} offset {offset} is not a snapshot; ignored" for offset in (0, 1)
    ]
    assert result.stdout.splitlines()[-1] == "Global: count=2 total=30.10 avg=15.05"
