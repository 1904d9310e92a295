"""Hostile values and hostile writer schemas: each decodes to a valid order or raises the project's
decode error, at once, whatever its bytes claim (fuzzed with hypothesis)."""

from __future__ import annotations

import copy
import io
import json
import struct
import time
from decimal import Decimal

import fastavro
import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafka_project import registry
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.state import ConsumerState, PartitionState, snapshot_from_json
from kafka_project.order_codec import (
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    MAX_VALUE_BYTES,
    InvalidOrderError,
    Order,
    OrderCodec,
    OrderDecodeError,
    UnusableSchemaError,
    published_schemas,
    schema_fingerprint,
    validate,
)
from kafka_project.order_codec import SINGLE_OBJECT_MARKER as MARKER
from kafka_project.writer_schema import UnusableWriterSchema, raw_writer
from tests.avro_bytes import avro_long, order_body

codec = OrderCodec()
ORDER = Order("ORD-0001", "Headphones", Decimal("294.48"), "CUST-07")
# A decode that takes longer than this is a hang in the making (a valid one takes microseconds).
# CPU time of the decoding thread, not the wall clock: beside the parallel suite a 30-byte decode
# once took 257 ms of wall time while descheduled; a hostile decode burns CPU the whole time.
DECODE_DEADLINE_MS = 250
FUZZ = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


class SchemasById:
    """The one call the codec makes to a Schema Registry: the writer schema under an id."""

    def __init__(self, schemas: dict[int, dict]) -> None:
        self.schemas = schemas

    def schema(self, schema_id: int) -> dict:
        try:
            return fastavro.parse_schema(copy.deepcopy(self.schemas[schema_id]))
        except (
            ValueError,
            TypeError,
            KeyError,
            fastavro.schema.SchemaParseException,
        ) as exc:  # as parsed() does
            raise registry.SchemaNotUsable(
                f"schema id {schema_id} is not a valid Avro schema: {exc}"
            ) from None


def order_schema_with(*extra_fields: dict) -> dict:
    document = json.loads(codec.document) if isinstance(codec.document, str) else codec.document
    document = copy.deepcopy(document)
    document["fields"].extend(extra_fields)
    return document


def decode_in_time(decoder: OrderCodec, value: bytes) -> Order | OrderDecodeError:
    """The order, or the decode error raised; fails on anything else or on a slow decode."""
    started = time.thread_time()
    try:
        result: Order | OrderDecodeError = decoder.decode(value)
    except OrderDecodeError as exc:
        result = exc
    assert time.thread_time() - started < DECODE_DEADLINE_MS / 1000
    if isinstance(result, Order):
        assert validate(result) == result
    return result


def test_a_price_of_416_000_bytes_is_poison_at_once():
    value = codec.header + order_body(b"\x7f" * 416_000)
    result = decode_in_time(codec, value)
    assert isinstance(result, InvalidOrderError)
    assert str(result) == f"value is {len(value)} bytes; an order takes at most {MAX_VALUE_BYTES}"


def test_a_price_one_byte_longer_than_its_decimal_type_holds_is_poison():
    # decimal(10, 2): 9,999,999,999 unscaled needs 35 bits, so 5 bytes; a sixth byte is too many.
    with pytest.raises(InvalidOrderError, match="price is 6 bytes; its decimal type holds at most 5"):
        codec.decode(codec.header + order_body(b"\x00\x00\x00\x00\x30\x39"))
    assert codec.decode(codec.header + order_body(b"\x00\x00\x30\x39")).price == Decimal("123.45")


@pytest.mark.parametrize("field", ["orderId", "product", "customerId"])
def test_a_text_longer_than_any_order_has_is_poison(field):
    long_text = "x" * (MAX_TEXT_CHARS + 1)
    order = ORDER._replace(
        **{{"orderId": "order_id", "customerId": "customer_id"}.get(field, field): long_text}
    )
    with pytest.raises(InvalidOrderError, match=f"{field} is {MAX_TEXT_CHARS + 1} characters"):
        codec.decode(codec.encode(order))


def test_a_compatible_writer_with_an_array_of_2_to_the_40_nulls_is_refused_unread():
    """The record is 30 bytes; fastavro would skip its 2^40 claimed items one by one (about 6 hours)."""
    hostile = order_schema_with({"name": "junk", "type": {"type": "array", "items": "null"}, "default": []})
    decoder = OrderCodec(schema_registry=SchemasById({7: hostile}))  # type: ignore[arg-type]
    value = registry.header(7) + order_body(b"\x30\x39") + avro_long(2**40) + avro_long(0)
    assert len(value) < 40
    result = decode_in_time(decoder, value)
    assert isinstance(result, UnusableSchemaError)
    assert "the writer's field 'junk' is of type 'array', which no order has" in str(result)


@pytest.mark.parametrize(
    "extra_type, kind",
    [
        ({"type": "map", "values": "string"}, "map"),
        ({"type": "record", "name": "Inner", "fields": [{"name": "a", "type": "int"}]}, "record"),
        (["null", {"type": "array", "items": "long"}], "array"),
    ],
    ids=["map", "record", "union-with-array"],
)
def test_writers_with_collections_or_records_are_refused(extra_type, kind):
    hostile = order_schema_with({"name": "extra", "type": extra_type})
    decoder = OrderCodec(schema_registry=SchemasById({3: hostile}))  # type: ignore[arg-type]
    with pytest.raises(UnusableSchemaError, match=f"'extra' is of type '{kind}'"):
        decoder.decode(registry.header(3) + order_body(b"\x30\x39") + b"\x00")


@pytest.mark.parametrize(
    "nested", [{"type": "array", "items": "null"}, ["null", "string"]], ids=["record", "union"]
)
def test_a_type_nested_in_a_type_is_refused_not_a_crash(nested):
    """fastavro parses {"type": {"type": ...}}; checking it raised TypeError (unhashable), a crash."""
    hostile = order_schema_with({"name": "extra", "type": {"type": nested}})
    decoder = OrderCodec(schema_registry=SchemasById({4: hostile}))  # type: ignore[arg-type]
    with pytest.raises(OrderDecodeError):
        decoder.decode(registry.header(4) + order_body(b"\x30\x39") + b"\x00")
    # A registry (or fastavro) that takes it hands the codec the nested form: refused, not a TypeError.
    schema = {
        "type": "record",
        "name": "O",
        "fields": [*hostile["fields"][:3], {"name": "extra", "type": {"type": nested}}],
    }
    with pytest.raises(UnusableWriterSchema, match="'extra' has a type nested in its type"):
        raw_writer(schema)


def test_a_compatible_writer_with_bounded_extra_fields_is_read():
    extra = [
        {"name": "quantity", "type": "int", "default": 1},
        {"name": "note", "type": ["null", "string"], "default": None},
        {
            "name": "channel",
            "type": {"type": "enum", "name": "Channel", "symbols": ["WEB", "SHOP"]},
            "default": "WEB",
        },
        {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 4}, "default": "abcd"},
    ]
    writer = order_schema_with(*extra)
    decoder = OrderCodec(schema_registry=SchemasById({9: writer}))  # type: ignore[arg-type]
    record = {**ORDER.to_record(), "quantity": 3, "note": "gift", "channel": "SHOP", "tag": b"wxyz"}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(copy.deepcopy(writer)), record)
    assert decoder.decode(registry.header(9) + body.getvalue()) == ORDER


# -- fuzzing -------------------------------------------------------------------------------------
HEADERS = [MARKER + schema_fingerprint(schema) for schema in published_schemas()]


@FUZZ
@given(
    header=st.sampled_from([*HEADERS, b"", b"\x00", MARKER, registry.header(1)]), body=st.binary(max_size=300)
)
def test_fuzz_any_bytes_after_any_header(header, body):
    decode_in_time(codec, header + body)


@st.composite
def mutated_orders(draw) -> bytes:
    """A valid order's bytes, then flipped, inserted, deleted bytes and a cut."""
    order = Order(
        draw(st.text(min_size=1, max_size=30)),
        draw(st.text(max_size=30)),
        Decimal(draw(st.integers(1, 10_000_000))).scaleb(-2),
        draw(st.none() | st.text(max_size=20)),
    )
    value = bytearray(codec.encode(order))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(value)))
        action = draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert":
            value[at:at] = draw(st.binary(min_size=1, max_size=12))
        elif at < len(value):
            if action == "flip":
                value[at] ^= draw(st.integers(1, 255))
            else:
                del value[at]
    return bytes(value[: draw(st.integers(0, len(value)))])


@FUZZ
@given(value=mutated_orders())
def test_fuzz_mutated_valid_orders(value):
    decode_in_time(codec, value)


def field_types(depth: int = 2) -> st.SearchStrategy:
    """Avro types a hostile writer may declare: scalars, and (nested) collections and records."""
    scalars = st.sampled_from(["null", "boolean", "int", "long", "float", "double", "string", "bytes"])
    if depth == 0:
        return scalars
    inner = field_types(depth - 1)
    return st.one_of(
        scalars,
        st.builds(lambda items: {"type": "array", "items": items}, inner),
        st.builds(lambda values: {"type": "map", "values": values}, inner),
        st.builds(
            lambda t, n: {"type": "record", "name": f"R{n}", "fields": [{"name": "f", "type": t}]},
            inner,
            st.integers(0, 10**6),
        ),
        st.builds(lambda t: ["null", t], inner.filter(lambda t: t != "null" and not isinstance(t, list))),
    )


@FUZZ
@given(
    extra=st.lists(field_types(), min_size=1, max_size=3),
    body=st.binary(max_size=60),
    price=st.binary(max_size=8),
)
def test_fuzz_hostile_writer_schemas_from_the_registry(extra, body, price):
    fields = [{"name": f"extra{i}", "type": t} for i, t in enumerate(extra)]
    decoder = OrderCodec(schema_registry=SchemasById({5: order_schema_with(*fields)}))  # type: ignore[arg-type]
    result = decode_in_time(decoder, registry.header(5) + order_body(price) + body)
    if any("array" in json.dumps(t) or "map" in json.dumps(t) or "record" in json.dumps(t) for t in extra):
        assert not isinstance(result, Order)  # refused: UnusableSchemaError, or not valid Avro at all


def test_values_longer_than_an_order_are_poison_whatever_they_hold():
    with pytest.raises(InvalidOrderError, match="an order takes at most"):
        codec.decode(codec.header + b"\x00" * MAX_VALUE_BYTES)


# -- aggregate snapshots (stats.py, exactly-once restores) ---------------------------------------
@pytest.mark.parametrize(
    "total", ["1e999999", "NaN", "-Infinity", "sNaN", "0.001", "100000000.01", "9" * 60, 12, None]
)
def test_a_snapshot_total_that_no_orders_add_up_to_is_refused(total):
    value = json.dumps(
        {"group": "g", "topic": "orders", "partition": 0, "count": 1000, "total": total, "next_offset": 5}
    )
    with pytest.raises((ValueError, ArithmeticError)):
        snapshot_from_json(value.encode())


def test_a_snapshot_as_written_round_trips():
    state = PartitionState("g", "orders", 2, 3, Decimal("10.05"), 17)
    assert snapshot_from_json(state.to_json()) == state
    consumer = ConsumerState("g", "share-1", 3, Decimal("10.05"))
    assert snapshot_from_json(consumer.to_json()) == consumer


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)


@FUZZ
@given(
    fields=st.fixed_dictionaries(
        {},
        optional={
            name: json_values | st.sampled_from(["1e999999", "NaN", "12.34", "g", "orders"])
            for name in ("group", "topic", "partition", "count", "total", "next_offset", "consumer")
        },
    ),
    noise=st.binary(max_size=3),
)
def test_fuzz_snapshots_are_read_or_refused_never_a_crash(fields, noise):
    try:
        state = snapshot_from_json(json.dumps(fields).encode() + noise)
    except (ValueError, KeyError, TypeError, ArithmeticError):
        return
    aggregate = state.aggregate()
    assert aggregate.count >= 0 and aggregate.total_price.is_finite()
    assert RunningAverage(aggregate.count, aggregate.total_price).avg.is_finite()
    assert isinstance(state.key, bytes)
    struct.pack(">q", aggregate.count)  # a count a Kafka client could carry


def test_a_valid_order_in_a_record_larger_than_an_orders_can_be_is_poison():
    value = OrderCodec().encode(Order("ORD-1", "Tablet", Decimal("10.00")))
    codec = OrderCodec()
    small = Message(value=value, key=b"k" * 1000, headers=[("a", b"x" * 1000)])
    assert codec.decode_record(small).order_id == "ORD-1"
    for key, headers in [(b"k" * MAX_RECORD_BYTES, None), (None, [("padding", b"x" * MAX_RECORD_BYTES)])]:
        with pytest.raises(InvalidOrderError, match="with its key and headers"):
            codec.decode_record(Message(value=value, key=key, headers=headers))
