"""Schema evolution and the Schema Registry's wire format, on a real broker and a real registry
(Apicurio, serving Confluent's API, started by bin/schema-registry-local)."""

from __future__ import annotations

import json
import socket
import time
from decimal import Decimal

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewPartitions
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from kafka_project import registry
from kafka_project.order_codec import HISTORY_DIR, SCHEMA_PATH, Order, OrderCodec
from kafka_project.registry import SchemaRegistry
from tests.avro_bytes import avro_long, order_body

from .conftest import (
    committed_offset,
    consumer_args,
    headers_of,
    produce_orders,
    records,
    run_ok,
    run_script,
    schema_registry_local,
    start_script,
    summary,
    wait_until,
)

VERSION_1 = str(HISTORY_DIR / "order-v1.avsc")
VERSION_2 = str(SCHEMA_PATH)  # the current order.avsc: version 1 plus an optional customerId


def consume(topics, *extra: str) -> dict[str, str]:
    result = run_script(
        "consumer", *consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "4", "--quiet", *extra)
    )
    assert result.returncode == 0, result.stderr
    return summary(result)


@pytest.mark.parametrize("wire_format", ["single-object", "schema-registry"])
@pytest.mark.parametrize(
    ("producer_schema", "consumer_schema"),
    [(VERSION_2, VERSION_1), (VERSION_1, VERSION_2)],
    ids=["old consumer, new producer", "new consumer, old producer"],
)
def test_old_and_new_schema_versions_read_each_other(
    bootstrap_servers, topics, request, wire_format, producer_schema, consumer_schema
):
    registry = (
        ["--schema-registry", request.getfixturevalue("schema_registry")]
        if wire_format != "single-object"
        else []
    )
    produce_orders(
        topics.orders, 200, "--customers", "3", "--seed", "5", "--schema", producer_schema, *registry
    )
    result = consume(topics, "--schema", consumer_schema, *registry)
    assert result["processed"] == "200" and result["dlq"] == "0"
    assert records(bootstrap_servers, topics.dlq) == []
    expected = OrderCodec(schema_registry=SchemaRegistry(registry[1], {}) if registry else None)
    total = sum(expected.decode(msg.value()).price for msg in records(bootstrap_servers, topics.orders))
    assert Decimal(result["total"]) == total


def confluent_serializer(url: str) -> AvroSerializer:
    """Confluent's own serializer, with the project's schema file and nothing else of ours."""
    client = SchemaRegistryClient({"url": url, "timeout": 10})
    return AvroSerializer(client, SCHEMA_PATH.read_text(), lambda order, _ctx: order)


def test_confluent_serializer_records_are_read_by_our_consumer(bootstrap_servers, topics, schema_registry):
    serialize = confluent_serializer(schema_registry)
    context = SerializationContext(topics.orders, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    prices = [Decimal(f"{n}.25") for n in range(1, 51)]
    for n, price in enumerate(prices):
        record = {"orderId": f"ORD-CONFLUENT-{n}", "product": "Tablet", "price": price, "customerId": None}
        producer.produce(topics.orders, key=record["orderId"].encode(), value=serialize(record, context))
    assert producer.flush(30) == 0
    result = consume(topics, "--schema-registry", schema_registry)
    assert result["processed"] == "50" and result["dlq"] == "0"
    assert Decimal(result["total"]) == sum(prices)


def test_our_records_are_read_by_confluent_deserializer(bootstrap_servers, topics, schema_registry):
    produce_orders(topics.orders, 30, "--seed", "9", "--customers", "2", "--schema-registry", schema_registry)
    # The topic's subject, as our producer registers it: the default strategy of confluent-kafka
    # 2.16 first asks the registry for "associations", which Apicurio answers in a way that left
    # the client waiting once (a test run hung here for half an hour).
    deserialize = AvroDeserializer(
        SchemaRegistryClient({"url": schema_registry, "timeout": 10}),
        conf={"subject.name.strategy": topic_subject_name_strategy},
    )
    context = SerializationContext(topics.orders, MessageField.VALUE)
    ours = OrderCodec(schema_registry=SchemaRegistry(schema_registry, {}))
    registered = SchemaRegistryClient({"url": schema_registry, "timeout": 10}).get_latest_version(
        f"{topics.orders}-value"
    )
    assert json.loads(registered.schema.schema_str) == json.loads(SCHEMA_PATH.read_text())  # as written
    for msg in records(bootstrap_servers, topics.orders):
        theirs = deserialize(msg.value(), context)
        assert Order(
            theirs["orderId"], theirs["product"], theirs["price"], theirs["customerId"]
        ) == ours.decode(msg.value())
        assert theirs["customerId"].startswith("customer-")


def test_a_version_the_subject_s_rule_refuses_is_one_line_and_nothing_sent(
    bootstrap_servers, topics, schema_registry, tmp_path
):
    # Registers version 2 under the subject.
    produce_orders(topics.orders, 1, "--schema-registry", schema_registry)
    subject = f"{topics.orders}-value"
    SchemaRegistryClient({"url": schema_registry, "timeout": 10}).set_compatibility(subject, "BACKWARD")
    required_field = json.loads(SCHEMA_PATH.read_text())
    required_field["fields"].append({"name": "warehouse", "type": "string"})  # no default: not BACKWARD
    schema = tmp_path / "order-required.avsc"
    schema.write_text(json.dumps(required_field))
    result = run_script(
        "producer",
        "--topic",
        topics.orders,
        "--count",
        "5",
        "--schema",
        str(schema),
        "--schema-registry",
        schema_registry,
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"error: the Schema Registry at {schema_registry} refused this order schema for subject '{subject}'"
    )
    assert "BACKWARD" in line
    assert len(records(bootstrap_servers, topics.orders)) == 1  # only the first run's order


def test_a_topic_carrying_both_formats_is_read_completely_and_listed(
    bootstrap_servers, topics, schema_registry
):
    for round_ in range(3):  # single-object, registry, single-object, ... in the same partition
        produce_orders(topics.orders, 20, "--seed", str(round_))
        produce_orders(topics.orders, 20, "--seed", str(10 + round_), "--schema-registry", schema_registry)
    result = consume(
        topics, "--schema-registry", schema_registry, "--failure-rate", "1", "--max-attempts", "1"
    )
    assert result["dlq"] == "120"  # every try fails: all 120 reach the DLQ, none as poison
    dead = records(bootstrap_servers, topics.dlq)
    originals = records(bootstrap_servers, topics.orders)
    assert [msg.value() for msg in dead] == [msg.value() for msg in originals]  # byte for byte
    assert {headers_of(msg)["dlq.error.type"] for msg in dead} == {"TemporaryProcessingError"}
    listing = run_ok("dlq", "list", "--topic", topics.dlq, "--schema-registry", schema_registry)
    assert listing.stdout.count("  order: {'orderId': 'ORD-") == 120, listing.stdout


def test_a_registry_outage_is_waited_out_not_dead_lettered(
    bootstrap_servers, topics, schema_registry, tmp_path
):
    log = tmp_path / "consumer.log"
    produce_orders(
        topics.orders, 300, "--seed", "3", "--customers", "4", "--schema-registry", schema_registry
    )
    schema_registry_local("stop")
    try:
        consumer = start_script(
            "consumer",
            *consumer_args(topics, "--schema-registry", schema_registry, "--quiet", "--idle-timeout", "6"),
            stdout_path=log,
        )
        wait_until(lambda: log.read_text().count("Waiting for the Schema Registry") >= 2, 60, "two waits")
        time.sleep(2)
        assert committed_offset(bootstrap_servers, topics.group, topics.orders) < 0  # nothing committed
        assert records(bootstrap_servers, topics.dlq) == []  # nothing dead-lettered meanwhile
    finally:
        schema_registry_local("start")  # the schemas were kept (registered before the outage)
    assert consumer.wait(120) == 0
    output = log.read_text()
    result = summary(output)
    dead = records(bootstrap_servers, topics.dlq)
    assert int(result["processed"]) + int(result["dlq"]) == 300, output
    assert int(result["dlq"]) == len(dead)
    assert {headers_of(msg)["dlq.error.type"] for msg in dead} <= {"TemporaryProcessingError"}
    assert "The Schema Registry answers again: reading on" in output
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 300


def test_an_outage_while_retries_fill_the_consumer_commits_nothing_it_skipped(
    bootstrap_servers, topics, schema_registry, tmp_path
):
    """The reviewer's loss path: flow control paused and resumed every partition, including one
    sought back to a record waiting for the registry, whose records were then skipped."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_partitions([NewPartitions(topics.orders, 2)])[topics.orders].result(30)
    registry_codec = OrderCodec(schema_registry=SchemaRegistry(schema_registry, {}))
    registry_codec.write_registry_format(topics.orders)
    producer = Producer({"bootstrap.servers": bootstrap_servers})

    def send(codec: OrderCodec, partition: int, count: int, first: int) -> None:
        for n in range(first, first + count):
            order = Order(f"ORD-P{partition}-{n}", "Tablet", Decimal("10.00"))
            producer.produce(topics.orders, value=codec.encode(order), partition=partition)
        assert producer.flush(30) == 0

    send(registry_codec, 1, 20, 0)
    log = tmp_path / "consumer.log"
    schema_registry_local("stop")
    try:
        flags = ("--failure-rate", "1", "--max-attempts", "2", "--retry-backoff", "2", "--max-in-flight", "2")
        consumer = start_script(
            "consumer",
            *consumer_args(
                topics, *flags, "--idle-timeout", "8", "--quiet", "--schema-registry", schema_registry
            ),
            stdout_path=log,
        )
        wait_until(lambda: "read again in 8 s" in log.read_text(), 60, "the fourth wait")
        send(OrderCodec(), 0, 2, 0)  # single-object: decoded at once, they fill the consumer
        time.sleep(4)  # their retries fill --max-in-flight 2: flow control pauses, then resumes
    finally:
        schema_registry_local("start")
    send(registry_codec, 1, 5, 20)
    assert consumer.wait(180) == 0, log.read_text()
    result = summary(log.read_text())
    dead = {
        (int(headers_of(msg)["dlq.original.partition"]), int(headers_of(msg)["dlq.original.offset"]))
        for msg in records(bootstrap_servers, topics.dlq)
    }
    assert result["processed"] == "0" and result["dlq"] == "27", log.read_text()
    assert dead == {(0, 0), (0, 1)} | {(1, offset) for offset in range(25)}
    assert committed_offset(bootstrap_servers, topics.group, topics.orders, 0) == 2
    assert committed_offset(bootstrap_servers, topics.group, topics.orders, 1) == 25


def test_a_url_that_is_not_a_registry_is_one_line_at_start_and_hides_credentials(
    bootstrap_servers, topics, schema_registry
):
    produce_orders(topics.orders, 3, "--schema-registry", schema_registry)
    base = schema_registry.removesuffix("/apis/ccompat/v7")  # Apicurio's root: 404 for the API's paths
    with_secret = base.replace("http://", "http://alice:S3cret@")
    for script, args in (
        ("consumer", consumer_args(topics, "--idle-timeout", "3")),
        ("dlq", ["list", "--topic", topics.orders]),
    ):
        result = run_script(script, *args, "--schema-registry", with_secret, timeout=60)
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: no Schema Registry API at {base} (") and "S3cret" not in line, line
    assert records(bootstrap_servers, topics.dlq) == []


def test_registry_settings_in_the_config_file_reach_the_registry_client(
    bootstrap_servers, topics, schema_registry, tmp_path
):
    config = tmp_path / "client.properties"
    config.write_text(
        f"schema.registry.url={schema_registry}\nbasic.auth.credentials.source=USER_INFO\n"
        "basic.auth.user.info=alice:S3cret\nschema.registry.timeout=5\n"
    )
    produce_orders(topics.orders, 10, "--config", str(config))
    assert all(msg.value()[:1] == b"\x00" for msg in records(bootstrap_servers, topics.orders))
    assert consume(topics, "--config", str(config))["processed"] == "10"
    config.write_text(f"schema.registry.url={schema_registry}\nbasic.auth.credentials.source=SASL_INHERIT\n")
    result = run_script("producer", "--topic", topics.orders, "--count", "1", "--config", str(config))
    assert result.returncode == 2 and result.stderr.startswith(
        "error: basic.auth.credentials.source=SASL_INHERIT"
    )


def test_a_registry_that_never_answers_is_one_line_not_a_hang(topics):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        result = run_script(
            "producer", "--topic", topics.orders, "--count", "1", "--schema-registry", url, timeout=90
        )
    assert time.monotonic() - started < 60
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: cannot reach the Schema Registry at {url} ("), result.stderr


def test_use_latest_schema_refuses_a_latest_version_it_cannot_write(
    bootstrap_servers, topics, schema_registry
):
    double_price = json.loads(SCHEMA_PATH.read_text())
    double_price["fields"][2]["type"] = "double"
    client = SchemaRegistryClient({"url": schema_registry, "timeout": 10})
    client.register_schema(f"{topics.orders}-value", RegistrySchema(json.dumps(double_price), "AVRO"))
    result = run_script(
        "producer",
        "--topic",
        topics.orders,
        "--count",
        "3",
        "--schema-registry",
        schema_registry,
        "--use-latest-schema",
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error: cannot write orders with schema id "), line
    assert records(bootstrap_servers, topics.orders) == []


def test_a_compatible_writer_claiming_2_to_the_40_items_is_dead_lettered_not_a_hang(
    bootstrap_servers, topics, schema_registry
):
    """A new version with an array of null (a default makes it compatible): a 30-byte record that
    claims 2^40 items took fastavro about 6 hours to skip, deaf to Ctrl-C. Now: poison, at once."""
    hostile = json.loads(SCHEMA_PATH.read_text())
    hostile["fields"].append({"name": "junk", "type": {"type": "array", "items": "null"}, "default": []})
    client = SchemaRegistryClient({"url": schema_registry, "timeout": 10})
    schema_id = client.register_schema(f"{topics.orders}-value", RegistrySchema(json.dumps(hostile), "AVRO"))
    value = registry.header(schema_id) + order_body(b"\x30\x39") + avro_long(2**40) + avro_long(0)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    producer.produce(topics.orders, key=b"hostile", value=value)
    assert producer.flush(30) == 0
    produce_orders(topics.orders, 3, "--seed", "4")
    started = time.monotonic()
    figures = consume(topics, "--schema-registry", schema_registry)
    assert time.monotonic() - started < 60
    assert (figures["processed"], figures["dlq"]) == ("3", "1")
    (dead,) = records(bootstrap_servers, topics.dlq)
    assert dead.value() == value
    assert headers_of(dead)["dlq.error.type"] == "UnusableSchemaError"
    assert headers_of(dead)["dlq.attempts"] == "0"
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 4
