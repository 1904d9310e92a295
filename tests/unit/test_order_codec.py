"""The wire format: single-object encoding round trip, and every way a value can fail to be an order."""

import json
from decimal import Decimal

import pytest
from confluent_kafka import Message

from kafka_project.order_codec import (
    MAX_PRICE,
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    MAX_VALUE_BYTES,
    SCHEMA_PATH,
    InvalidOrderError,
    Order,
    OrderCodec,
    SchemaFileError,
    UnknownSchemaError,
    load_schema,
    record_size,
    schema_fingerprint,
    validate,
)
from kafka_project.producer.producer import random_orders

codec = OrderCodec()
ORDER_SCHEMA = json.loads(SCHEMA_PATH.read_text())
LIST_FIELD = {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}
ORDER = Order("ORD-0001", "Headphones", Decimal("294.48"))


def crc64_avro(data: bytes) -> int:
    """The reference algorithm from the Avro specification ("Schema Fingerprints")."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_round_trip_keeps_money_exact():
    assert codec.decode(codec.encode(ORDER)) == ORDER
    assert str(codec.decode(codec.encode(ORDER)).price) == "294.48"


def test_random_orders_round_trip_and_ids_are_unique():
    orders = [order for order, _ in zip(random_orders(seed=1), range(5000), strict=False)]
    assert len({order.order_id for order in orders}) == 5000
    assert all(codec.decode(codec.encode(order)) == order for order in orders)


def test_same_seed_same_orders():
    first = [o for o, _ in zip(random_orders(seed=9), range(20), strict=False)]
    again = [o for o, _ in zip(random_orders(seed=9), range(20), strict=False)]
    assert first == again


def test_value_is_marker_fingerprint_body():
    value = codec.encode(ORDER)
    canonical = (
        b'{"name":"com.example.orders.Order","type":"record","fields":['
        b'{"name":"orderId","type":"string"},{"name":"product","type":"string"},'
        b'{"name":"price","type":"bytes"},{"name":"customerId","type":["null","string"]}]}'
    )
    assert value[:2] == b"\xc3\x01"
    assert value[2:10] == crc64_avro(canonical).to_bytes(8, "little")
    # Body: zigzag length-prefixed strings, the decimal's unscaled value 29448 as big-endian bytes,
    # then customerId's union branch 0 (null).
    assert value[10:] == b"\x10ORD-0001\x14Headphones\x04\x73\x08\x00"


def test_display_matches_the_seed():
    assert str(ORDER) == "{'orderId': 'ORD-0001', 'product': 'Headphones', 'price': 294.48}"
    with_customer = ORDER._replace(customer_id="CUST-07")
    assert (
        str(with_customer)
        == "{'orderId': 'ORD-0001', 'product': 'Headphones', 'price': 294.48, 'customerId': 'CUST-07'}"
    )


VALID = codec.encode(ORDER)
OTHER_SCHEMA = b"\xc3\x01" + b"\x00" * 8 + VALID[10:]


@pytest.mark.parametrize(
    ("value", "error", "reason"),
    [
        (None, InvalidOrderError, r"^null value \(tombstone\)$"),
        (b"", InvalidOrderError, "^empty value$"),
        (
            b"hello world",
            UnknownSchemaError,
            r"^unknown schema: no Avro single-object marker \(C3 01\) "
            r"and no Schema Registry header \(00 \+ id\)$",
        ),
        (b"\x00\x01", UnknownSchemaError, "2 bytes, shorter than the header"),
        (b"\xc3\x01\x00", UnknownSchemaError, "3 bytes, shorter than the header"),
        (
            OTHER_SCHEMA,
            UnknownSchemaError,
            "fingerprint 0000000000000000 is none of the 2 published versions",
        ),
        (
            b"\x00\x00\x00\x00\x07" + VALID[10:],
            UnknownSchemaError,
            r"Registry format \(schema id 7\) but no --schema",
        ),
        (VALID[:-3], InvalidOrderError, "^malformed Avro body: Expected 2 bytes, read 0$"),
        # fastavro's error says nothing here: its type is the reason
        (VALID[:10], InvalidOrderError, "^malformed Avro body: EOFError$"),
        (VALID + b"\x00", InvalidOrderError, "1 unexpected bytes"),
        (VALID.replace(b"Headphones", b"Head\xffphone"), InvalidOrderError, "malformed Avro body"),
        (codec.encode(Order("ORD-1", "Tablet", Decimal("-5.00"))), InvalidOrderError, "not positive"),
        (codec.encode(Order("ORD-1", "Tablet", Decimal("0.00"))), InvalidOrderError, "not positive"),
        (codec.encode(Order("ORD-1", "Tablet", Decimal("99999999.99"))), InvalidOrderError, "above"),
        (codec.encode(Order(" ", "Tablet", Decimal("1.00"))), InvalidOrderError, "^empty orderId$"),
    ],
)
def test_poison_values_are_rejected_with_a_reason(value, error, reason):
    with pytest.raises(error, match=reason):
        codec.decode(value)


def test_fingerprint_ignores_formatting_and_docs(tmp_path):
    schema = json.loads(SCHEMA_PATH.read_text())
    schema["doc"] = "another doc"
    reformatted = tmp_path / "order.avsc"
    reformatted.write_text(json.dumps(schema, indent=8))
    assert schema_fingerprint(OrderCodec(reformatted).schema) == codec.header[2:]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot read schema file"),
        ("{not json", "not valid JSON"),
        ('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}', "not a valid Avro"),
        ('"string"', "not an order record: no orderId, price, product"),
        ('{"type": "record", "name": "X", "fields": [{"name": "orderId", "type": "string"}]}', "no price"),
        ('{"type": "enum", "name": "E", "symbols": ["A"]}', "not an order record"),
        (
            json.dumps({**ORDER_SCHEMA, "fields": [*ORDER_SCHEMA["fields"], LIST_FIELD]}),
            "cannot be an order's: ",
        ),
        (b'{"doc": "caf\xe9"}', r"is not UTF-8 \(line 1, byte 0xe9\)$"),
    ],
)
def test_bad_schema_files_give_one_clear_error(tmp_path, text, message):
    path = tmp_path / "order.avsc"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    for read in (OrderCodec, load_schema):
        with pytest.raises(SchemaFileError, match=message) as raised:
            read(path)
        assert str(path) in str(raised.value)  # the message names the file


def test_a_record_s_size_is_its_value_key_and_header_names_and_values():
    record = Message(value=b"v" * 10, key=b"kk", headers=[("abc", b"xyz1"), ("d", None)])
    assert record_size(record) == 10 + 2 + 3 + 4 + 1


def test_bounds_are_inclusive_the_largest_allowed_value_record_text_and_price_pass():
    largest = Order("x" * MAX_TEXT_CHARS, "y" * MAX_TEXT_CHARS, MAX_PRICE, "z" * MAX_TEXT_CHARS)
    assert codec.decode(codec.encode(largest)) == largest
    value = codec.encode(ORDER)
    assert codec.decode_record(Message(value=value, key=b"k" * (MAX_RECORD_BYTES - len(value)))) == ORDER
    # A value of exactly MAX_VALUE_BYTES is decoded (and refused for what it holds, not its size).
    with pytest.raises(InvalidOrderError, match="unexpected bytes after the record"):
        codec.decode(codec.header + b"\x00" * (MAX_VALUE_BYTES - len(codec.header)))


def test_a_price_finer_than_a_cent_is_refused():
    with pytest.raises(InvalidOrderError, match=r"^price 1.001 is not a whole number of cents$"):
        validate(ORDER._replace(price=Decimal("1.001")))


def test_a_header_is_resolved_once_then_read_from_the_cache():
    reader = OrderCodec()
    assert reader.decode(VALID) == ORDER
    assert reader.readings[reader.header].reader is None  # our own schema: nothing to resolve
    reader.published.clear()  # a lookup now would find nothing: the cache answers
    assert reader.decode(VALID) == ORDER
