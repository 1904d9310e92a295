"""Orders on the wire: one Avro record per Kafka message, in Avro's single-object encoding.

Layout of every message value (Avro specification, "Single-object encoding"):

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema | Avro binary body

The marker and fingerprint make every message name its schema, so bytes written with another
schema (or no schema at all) are rejected instead of being misread as an order.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.types import Schema

from kafka_project.errors import InvalidInputError, where_not_utf8

SCHEMA_PATH = Path(__file__).parent / "schemas" / "order.avsc"
SINGLE_OBJECT_MARKER = b"\xc3\x01"
ORDER_FIELDS = {"orderId", "product", "price"}
HEADER_SIZE = len(SINGLE_OBJECT_MARKER) + 8
CENT = Decimal("0.01")
ZERO = Decimal(0)  # comparing Decimals is twice as fast as comparing a Decimal with an int
# Anything above this is a data error, not a sale (the producer stays far below it).
MAX_PRICE = Decimal("100000.00")


class SchemaFileError(InvalidInputError):
    """The schema file is missing, is not UTF-8 or is not a valid Avro schema."""


class OrderDecodeError(ValueError):
    """A message value that is not a valid order: poison, never retried."""


class UnknownSchemaError(OrderDecodeError):
    """The value lacks the single-object marker or names a schema this codec does not know."""


class InvalidOrderError(OrderDecodeError):
    """The value names our schema but its body is malformed or breaks a business rule."""


class Order(NamedTuple):
    """Immutable; a named tuple: the consumer builds one per record, at half a frozen dataclass's cost."""

    order_id: str
    product: str
    price: Decimal

    def to_record(self) -> dict:
        return {"orderId": self.order_id, "product": self.product, "price": self.price}

    def __str__(self) -> str:
        # The seed's display format; the price is printed from the Decimal, so exactly as sent.
        return f"{{'orderId': '{self.order_id}', 'product': '{self.product}', 'price': {self.price}}}"


def load_schema(path: Path = SCHEMA_PATH) -> Schema:
    """Read and parse an Avro schema file, with one clear error for every way it can be wrong."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise SchemaFileError(f"cannot read schema file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SchemaFileError(f"schema file {path} is not UTF-8 ({where_not_utf8(exc)})") from None
    try:
        schema = fastavro.parse_schema(json.loads(text))
    except json.JSONDecodeError as exc:
        raise SchemaFileError(f"schema file {path} is not valid JSON: {exc}") from exc
    except (fastavro.schema.SchemaParseException, TypeError, KeyError, ValueError) as exc:
        raise SchemaFileError(f"schema file {path} is not a valid Avro schema: {exc}") from exc
    fields = {field["name"] for field in schema.get("fields", [])} if isinstance(schema, dict) else set()
    if missing := ORDER_FIELDS - fields:
        raise SchemaFileError(
            f"schema file {path} is valid Avro but not an order record: no {', '.join(sorted(missing))}"
        )
    return schema


def schema_fingerprint(schema: Schema) -> bytes:
    """CRC-64-AVRO of the schema's Parsing Canonical Form, as the 8 little-endian bytes on the wire."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


class OrderCodec:
    """Encodes and decodes orders; the schema is parsed once, here."""

    def __init__(self, schema_path: Path = SCHEMA_PATH) -> None:
        self.schema = load_schema(schema_path)
        self.header = SINGLE_OBJECT_MARKER + schema_fingerprint(self.schema)

    def encode(self, order: Order) -> bytes:
        body = io.BytesIO()
        body.write(self.header)
        fastavro.schemaless_writer(body, self.schema, order.to_record())
        return body.getvalue()

    def decode(self, value: bytes | None) -> Order:
        if not value:
            raise InvalidOrderError("empty value" if value is not None else "null value (tombstone)")
        if value[:HEADER_SIZE] != self.header:
            raise UnknownSchemaError(self._describe_unknown(value))
        body = io.BytesIO(value)
        body.seek(HEADER_SIZE)
        try:
            record = fastavro.schemaless_reader(body, self.schema, None)
        except (EOFError, ValueError, IndexError, OverflowError, MemoryError) as exc:
            raise InvalidOrderError(f"malformed Avro body: {exc or type(exc).__name__}") from exc
        if body.tell() != len(value):
            raise InvalidOrderError(f"{len(value) - body.tell()} unexpected bytes after the record")
        assert isinstance(record, dict)  # the order schema is a record
        return validate(Order(record["orderId"], record["product"], record["price"]))

    def _describe_unknown(self, value: bytes) -> str:
        if value[:2] != SINGLE_OBJECT_MARKER:
            return "unknown schema: no Avro single-object marker (C3 01)"
        return f"unknown schema: fingerprint {value[2:HEADER_SIZE].hex()} is not {self.header[2:].hex()}"


def validate(order: Order) -> Order:
    """Business rules that Avro's types cannot express."""
    if not order.order_id.strip():
        raise InvalidOrderError("empty orderId")
    if order.price <= ZERO:
        raise InvalidOrderError(f"price {order.price} is not positive")
    if order.price > MAX_PRICE:
        raise InvalidOrderError(f"price {order.price} is above the {MAX_PRICE} limit")
    if order.price != order.price.quantize(CENT):
        raise InvalidOrderError(f"price {order.price} is not a whole number of cents")
    return order
