"""Orders on the wire: one Avro record per Kafka message, in either of two formats, told apart by
the first byte of every value:

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema | Avro body   (single-object encoding)
    00    | 4-byte schema id in the Schema Registry             | Avro body   (the registry's format)

`OrderCodec` is the one entry point: it writes the format it was built for and reads both. The
writer's schema is found by its fingerprint among every published version of the order schema
(schemas/history/ and the current schemas/order.avsc) or by its id in the registry, and read
into the reader's schema with Avro's resolution rules, so old and new programs keep talking.
Bytes written with an unknown schema (or no schema at all) are rejected, never misread.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import fastavro
from confluent_kafka import Message
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.types import Schema

from kafka_project import registry
from kafka_project.errors import InvalidInputError, UserError, where_not_utf8
from kafka_project.registry import SchemaRegistry
from kafka_project.writer_schema import PriceType, UnusableWriterSchema, raw_writer

SCHEMA_PATH = Path(__file__).parent / "schemas" / "order.avsc"
HISTORY_DIR = SCHEMA_PATH.parent / "history"  # every earlier published version, never edited
SINGLE_OBJECT_MARKER = b"\xc3\x01"
ORDER_FIELDS = {"orderId", "product", "price"}
HEADER_SIZE = len(SINGLE_OBJECT_MARKER) + 8
CENT = Decimal("0.01")
ZERO = Decimal(0)  # comparing Decimals is twice as fast as comparing a Decimal with an int
# Anything above this is a data error, not a sale (the producer stays far below it).
MAX_PRICE = Decimal("100000.00")
# Bounds that no real order comes near, checked before and after decoding: a value longer than
# MAX_VALUE_BYTES is poison unread, and so is a text field longer than MAX_TEXT_CHARS.
MAX_VALUE_BYTES = 16 * 1024
MAX_TEXT_CHARS = 200
# A whole record (value, key and headers) above this is poison too: orders waiting for a retry are
# held in memory, and a 30-byte order could otherwise carry a megabyte of headers.
MAX_RECORD_BYTES = 64 * 1024


def record_size(msg: Message) -> int:
    """The bytes a record holds in memory: its value, key and headers."""
    size = len(msg) + len(msg.key() or b"")
    for header in msg.headers() or []:
        name, value = header[0], header[1]
        size += len(name) + len(value or b"")
    return size


class SchemaFileError(InvalidInputError):
    """The schema file is missing, is not UTF-8 or is not a valid Avro schema."""


class OrderDecodeError(ValueError):
    """A message value that is not a valid order: poison, never retried."""


class UnknownSchemaError(OrderDecodeError):
    """The value lacks the single-object marker or names a schema this codec does not know."""


class UnusableSchemaError(OrderDecodeError):
    """The value names a writer schema that cannot be an order's, or whose decoding is unbounded."""


class InvalidOrderError(OrderDecodeError):
    """The value names our schema but its body is malformed or breaks a business rule."""


class Order(NamedTuple):
    """Immutable; a named tuple: the consumer builds one per record, at half a frozen dataclass's cost."""

    order_id: str
    product: str
    price: Decimal
    customer_id: str | None = None  # schema version 2; None in orders written with version 1

    def to_record(self) -> dict:
        return {
            "orderId": self.order_id,
            "product": self.product,
            "price": self.price,
            "customerId": self.customer_id,
        }

    def __str__(self) -> str:
        # The seed's display format; the price is printed from the Decimal, so exactly as sent.
        customer = f", 'customerId': '{self.customer_id}'" if self.customer_id is not None else ""
        return (
            f"{{'orderId': '{self.order_id}', 'product': '{self.product}', 'price': {self.price}{customer}}}"
        )


def load_schema(path: Path = SCHEMA_PATH) -> Schema:
    """Read and parse an Avro schema file, with one clear error for every way it can be wrong."""
    return parse_order_schema(read_schema_document(path), path)


def read_schema_document(path: Path) -> Schema:
    """The schema file's JSON, as written (json.loads gives the dict, list or string a schema is)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise SchemaFileError(f"cannot read schema file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SchemaFileError(f"schema file {path} is not UTF-8 ({where_not_utf8(exc)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaFileError(f"schema file {path} is not valid JSON: {exc}") from exc


def parse_order_schema(document: Schema, path: Path) -> Schema:
    """The parsed schema of an order record (fastavro's form, which adds keys of its own)."""
    try:
        schema = fastavro.parse_schema(document)
    except (fastavro.schema.SchemaParseException, TypeError, KeyError, ValueError) as exc:
        raise SchemaFileError(f"schema file {path} is not a valid Avro schema: {exc}") from exc
    fields = {field["name"] for field in schema.get("fields", [])} if isinstance(schema, dict) else set()
    if missing := ORDER_FIELDS - fields:
        raise SchemaFileError(
            f"schema file {path} is valid Avro but not an order record: no {', '.join(sorted(missing))}"
        )
    try:
        raw_writer(schema)
    except UnusableWriterSchema as exc:
        raise SchemaFileError(f"schema file {path} cannot be an order's: {exc}") from None
    return schema


def schema_fingerprint(schema: Schema) -> bytes:
    """CRC-64-AVRO of the schema's Parsing Canonical Form, as the 8 little-endian bytes on the wire."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def published_schemas() -> list[Schema]:
    """Every published version of the order schema: the earlier ones, then the current order.avsc."""
    return [load_schema(path) for path in [*sorted(HISTORY_DIR.glob("*.avsc")), SCHEMA_PATH]]


@dataclass(frozen=True)
class Reading:
    """How to read the values that start with one header (a fingerprint, or a registry id)."""

    body_start: int
    writer: Schema  # with the price as plain bytes (writer_schema.raw_writer)
    reader: Schema | None  # likewise; None: the writer's schema is the reader's, nothing to resolve
    price: PriceType  # the writer's decimal type, which turns the price's bytes into a Decimal


class OrderCodec:
    """Encodes orders in one format and decodes both; schemas are parsed once, readings cached.

    `schema` is this program's version of the order schema: what it writes (unless told to write
    the registry's latest version) and what every order it reads is resolved into."""

    def __init__(
        self, schema_path: Path = SCHEMA_PATH, schema_registry: SchemaRegistry | None = None
    ) -> None:
        # The file's JSON as written goes to the registry; the parsed form carries fastavro's keys.
        self.document = read_schema_document(schema_path)
        self.schema = parse_order_schema(self.document, schema_path)
        self.registry = schema_registry
        self.header = SINGLE_OBJECT_MARKER + schema_fingerprint(self.schema)  # what encode writes first
        self.writer_schema = self.schema
        self.published = {
            SINGLE_OBJECT_MARKER + schema_fingerprint(s): s for s in [*published_schemas(), self.schema]
        }
        self.raw_reader = raw_writer(self.schema).schema
        self.readings: dict[bytes, Reading] = {}

    def write_registry_format(self, topic: str, use_latest: bool = False) -> int:
        """From now on encode in the registry's format: register this schema under the topic's
        subject, or write with the latest version registered there. Returns the schema id."""
        if self.registry is None:
            raise UserError("the registry's format needs --schema-registry")
        subject = registry.subject_of(topic)
        if use_latest:
            schema_id, self.writer_schema = self.registry.latest(subject)
        else:
            schema_id = self.registry.register(subject, self.document)
        self.header = registry.header(schema_id)
        self.check_round_trip(f"schema id {schema_id} of '{subject}'")
        return schema_id

    def check_round_trip(self, writer: str) -> None:
        """Refuse at start-up a writer schema whose orders this program could not read back (a
        field it cannot fill, a price that is not a decimal), rather than send them."""
        sample = Order("ORD-CHECK", "Check", Decimal("1.00"))
        try:
            self.decode(self.encode(sample))
        except (ValueError, TypeError, OrderDecodeError) as exc:
            raise UserError(f"cannot write orders with {writer}: {exc}") from None

    def writes(self, field: str) -> bool:
        """Whether the schema this codec writes with has this field (customerId: since version 2)."""
        fields = self.writer_schema.get("fields", []) if isinstance(self.writer_schema, dict) else []
        return any(known["name"] == field for known in fields)

    def encode(self, order: Order) -> bytes:
        body = io.BytesIO()
        body.write(self.header)
        fastavro.schemaless_writer(body, self.writer_schema, order.to_record())
        return body.getvalue()

    def decode_record(self, msg: Message) -> Order:
        """The order in a record (decode, which bounds its work by the value's size first), refused
        when the record with its key and headers is larger than an order's can be."""
        order = self.decode(msg.value())
        if (size := record_size(msg)) > MAX_RECORD_BYTES:
            raise InvalidOrderError(
                f"record is {size} bytes with its key and headers; an order's is at most {MAX_RECORD_BYTES}"
            )
        return order

    def decode(self, value: bytes | None) -> Order:
        """The order in a value of either format. OrderDecodeError: poison; RegistryUnavailableError:
        the registry could not be asked, try again later."""
        if not value:
            raise InvalidOrderError("empty value" if value is not None else "null value (tombstone)")
        key = value[: registry.HEADER_SIZE] if value[0] == 0 else value[:HEADER_SIZE]
        reading = self.readings.get(key) or self.reading_for(key)
        if len(value) > MAX_VALUE_BYTES:  # before decoding: the work per record stays bounded
            raise InvalidOrderError(f"value is {len(value)} bytes; an order takes at most {MAX_VALUE_BYTES}")
        body = io.BytesIO(value)
        body.seek(reading.body_start)
        try:
            record = fastavro.schemaless_reader(body, reading.writer, reading.reader)
            assert isinstance(record, dict)  # the order schema is a record
            price = reading.price.decimal(record["price"])
        except (EOFError, ValueError, IndexError, OverflowError, MemoryError, SchemaResolutionError) as exc:
            raise InvalidOrderError(f"malformed Avro body: {str(exc) or type(exc).__name__}") from exc
        if body.tell() != len(value):
            raise InvalidOrderError(f"{len(value) - body.tell()} unexpected bytes after the record")
        return validate(Order(record["orderId"], record["product"], price, record.get("customerId")))

    def reading_for(self, key: bytes) -> Reading:
        """Find the writer's schema a header names; cached once found (never for poison)."""
        if len(key) == HEADER_SIZE and key[:2] == SINGLE_OBJECT_MARKER:
            writer = self.published.get(key)
            if writer is None:
                raise UnknownSchemaError(
                    f"unknown schema: fingerprint {key[2:].hex()} is none of the {len(self.published)} "
                    "published versions of the order schema"
                )
        elif len(key) == registry.HEADER_SIZE and key[:1] == registry.MAGIC_BYTE:
            schema_id = registry.schema_id_of(key)
            if self.registry is None:
                raise UnknownSchemaError(
                    f"unknown schema: Schema Registry format (schema id {schema_id}) but no --schema-registry"
                )
            try:
                writer = self.registry.schema(schema_id)  # RegistryUnavailableError: not poison, raised on
            except registry.SchemaNotUsable as exc:
                raise UnknownSchemaError(f"unknown schema: {exc}") from None
        elif key[:2] == SINGLE_OBJECT_MARKER or key[:1] == registry.MAGIC_BYTE:
            raise UnknownSchemaError(f"unknown schema: {len(key)} bytes, shorter than the header they start")
        else:
            raise UnknownSchemaError(
                "unknown schema: no Avro single-object marker (C3 01) and no Schema Registry header (00 + id)"
            )
        try:
            raw = raw_writer(writer)
        except UnusableWriterSchema as exc:
            raise UnusableSchemaError(f"unusable writer schema: {exc}") from None
        reading = Reading(len(key), raw.schema, None if writer == self.schema else self.raw_reader, raw.price)
        self.readings[key] = reading
        return reading


def validate(order: Order) -> Order:
    """Business rules that Avro's types cannot express."""
    if not order.order_id.strip():
        raise InvalidOrderError("empty orderId")
    for name, text in (
        ("orderId", order.order_id),
        ("product", order.product),
        ("customerId", order.customer_id),
    ):
        if text is not None and len(text) > MAX_TEXT_CHARS:
            raise InvalidOrderError(f"{name} is {len(text)} characters; at most {MAX_TEXT_CHARS}")
    if order.price <= ZERO:
        raise InvalidOrderError(f"price {order.price} is not positive")
    if order.price > MAX_PRICE:
        raise InvalidOrderError(f"price {order.price} is above the {MAX_PRICE} limit")
    if order.price != order.price.quantize(CENT):
        raise InvalidOrderError(f"price {order.price} is not a whole number of cents")
    return order
