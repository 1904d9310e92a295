"""Schema evolution without a registry: every published version is known by its fingerprint and
read into this program's version with Avro's resolution rules."""

import io
import json
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest

from kafka_project.order_codec import (
    HISTORY_DIR,
    SCHEMA_PATH,
    SINGLE_OBJECT_MARKER,
    Order,
    OrderCodec,
    UnknownSchemaError,
    UnusableSchemaError,
    published_schemas,
    schema_fingerprint,
)

VERSION_1 = HISTORY_DIR / "order-v1.avsc"
ORDER = Order("ORD-0001", "Headphones", Decimal("294.48"), customer_id="CUST-07")


def test_old_reader_reads_the_new_version_without_the_added_field():
    new_writer, old_reader = OrderCodec(SCHEMA_PATH), OrderCodec(VERSION_1)
    assert old_reader.decode(new_writer.encode(ORDER)) == ORDER._replace(customer_id=None)


def test_new_reader_reads_the_old_version_with_the_added_field_s_default():
    old_writer, new_reader = OrderCodec(VERSION_1), OrderCodec(SCHEMA_PATH)
    value = old_writer.encode(ORDER)  # version 1 has no customerId: it is not written
    assert new_reader.decode(value) == ORDER._replace(customer_id=None)


def fields_of(path: Path) -> set[str]:
    return {field["name"] for field in json.loads(path.read_text())["fields"]}


def test_every_published_version_reads_every_other():
    """Every field survives, except one the writer or the reader lacks: that one reads as its default."""
    versions = [*sorted(HISTORY_DIR.glob("*.avsc")), SCHEMA_PATH]
    for writer_path in versions:
        value = OrderCodec(writer_path).encode(ORDER)
        for reader_path in versions:
            both_know = fields_of(writer_path) & fields_of(reader_path)
            expected = ORDER if "customerId" in both_know else ORDER._replace(customer_id=None)
            assert OrderCodec(reader_path).decode(value) == expected, (writer_path, reader_path)


def test_published_versions_are_distinct_and_end_with_the_current_one():
    fingerprints = [schema_fingerprint(schema) for schema in published_schemas()]
    assert len(set(fingerprints)) == len(fingerprints) == len(list(HISTORY_DIR.glob("*.avsc"))) + 1
    assert fingerprints[-1] == schema_fingerprint(OrderCodec().schema)


def writer_with(tmp_path: Path, change) -> tuple[dict, bytes]:
    """A writer schema derived from the current one, and its single-object header."""
    schema = json.loads(SCHEMA_PATH.read_text())
    change(schema["fields"])
    path = tmp_path / "writer.avsc"
    path.write_text(json.dumps(schema))
    parsed = fastavro.parse_schema(schema)
    return parsed, SINGLE_OBJECT_MARKER + schema_fingerprint(parsed)


def encode_with(schema: dict, header: bytes, record: dict) -> bytes:
    body = io.BytesIO()
    body.write(header)
    fastavro.schemaless_writer(body, schema, record)
    return body.getvalue()


def test_a_promoted_type_and_a_removed_field_are_read(tmp_path):
    def product_as_bytes_without_customer(fields):
        fields[1]["type"] = "bytes"  # bytes -> string is one of Avro's promotions
        del fields[3]

    schema, header = writer_with(tmp_path, product_as_bytes_without_customer)
    codec = OrderCodec()
    codec.published[header] = schema  # as if this version had been published
    value = encode_with(schema, header, {"orderId": "ORD-1", "product": b"Tablet", "price": Decimal("5.00")})
    assert codec.decode(value) == Order("ORD-1", "Tablet", Decimal("5.00"), None)


def test_a_version_nobody_published_is_poison_with_its_fingerprint(tmp_path):
    schema, header = writer_with(tmp_path, lambda fields: fields.append({"name": "note", "type": "string"}))
    value = encode_with(schema, header, {**ORDER.to_record(), "note": "x"})
    with pytest.raises(
        UnknownSchemaError, match=f"fingerprint {header[2:].hex()} is none of the 2 published"
    ):
        OrderCodec().decode(value)


def test_a_writer_whose_price_is_not_a_decimal_is_poison_not_a_crash(tmp_path):
    def plain_bytes_price(fields):
        fields[2]["type"] = "bytes"

    schema, header = writer_with(tmp_path, plain_bytes_price)
    codec = OrderCodec()
    codec.published[header] = schema
    value = encode_with(
        schema, header, {"orderId": "ORD-1", "product": "Tablet", "price": b"\x01", "customerId": None}
    )
    with pytest.raises(UnusableSchemaError, match="the writer's price is not a decimal of bytes"):
        codec.decode(value)
