"""Which writer schemas can carry an order, checked before a single byte is decoded with them.

A writer's schema comes from outside (the Schema Registry takes any compatible new version), and
Avro lets bytes claim any count or length: a field of type array of null with 2^40 items is
skipped one item at a time, for hours, holding the GIL. So a writer schema is used only if
decoding with it costs no more than reading its bytes: the fields an order has (strings, the
decimal price) and other scalars, enums and fixed values; no arrays, maps or nested records.

The price is read as plain bytes and only then made a Decimal, once its length is known to fit
the schema's precision: Avro's decimal conversion is quadratic in the length (a 300 KB "price"
took 8 s) and overflows past that.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import fastavro
from fastavro.types import Schema

PRICE_FIELD = "price"
# Types whose decoding reads at most the bytes they occupy (a string's claimed length is capped by
# what is left of the record).
SCALARS = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}
# Python's default decimal context holds 28 digits: a wider price would be rounded when scaled.
MAX_PRICE_PRECISION = 28


class UnusableWriterSchema(ValueError):
    """A writer schema that cannot be an order's, or would make decoding unbounded."""


@dataclass(frozen=True)
class PriceType:
    """The writer's decimal: how many bytes its unscaled value may take, and its scale."""

    max_bytes: int
    scale: int

    def decimal(self, raw: bytes) -> Decimal:
        """The price in the writer's two's-complement big-endian bytes, checked for size first."""
        if len(raw) > self.max_bytes:
            raise ValueError(f"price is {len(raw)} bytes; its decimal type holds at most {self.max_bytes}")
        return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-self.scale)


@dataclass(frozen=True)
class RawWriter:
    """A usable writer schema, with the price as plain bytes (fastavro's parsed form)."""

    schema: Schema
    price: PriceType


def raw_writer(schema: Schema) -> RawWriter:
    """The writer schema in the form the codec decodes with; UnusableWriterSchema if it has a
    type whose decoding is unbounded, or a price that is not a decimal of bytes."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise UnusableWriterSchema("the writer schema is not a record")
    named: set[str] = set()  # enums and fixed types defined so far, which later fields may name
    fields, price = [], None
    for field in schema.get("fields", []):
        if field["name"] == PRICE_FIELD:
            price = price_type(field["type"])
            fields.append({**field, "type": "bytes"})
        else:
            check_bounded(field["type"], field["name"], named)
            fields.append(field)
    if price is None:
        raise UnusableWriterSchema("the writer schema has no price")
    plain = {key: value for key, value in schema.items() if not key.startswith("__")}
    return RawWriter(fastavro.parse_schema({**plain, "fields": fields}), price)


def price_type(field_type: Schema) -> PriceType:
    if not (
        isinstance(field_type, dict)
        and field_type.get("type") == "bytes"
        and field_type.get("logicalType") == "decimal"
    ):
        raise UnusableWriterSchema("the writer's price is not a decimal of bytes")
    precision, scale = field_type.get("precision"), field_type.get("scale", 0)
    if not (isinstance(precision, int) and 0 < precision <= MAX_PRICE_PRECISION):
        raise UnusableWriterSchema(
            f"the writer's price precision {precision!r} is not 1-{MAX_PRICE_PRECISION}"
        )
    if not (isinstance(scale, int) and 0 <= scale <= precision):
        raise UnusableWriterSchema(f"the writer's price scale {scale!r} is not 0-{precision}")
    # Two's complement of the largest unscaled value, 10^precision - 1, plus its sign bit.
    max_bytes = ((10**precision - 1).bit_length() + 1 + 7) // 8
    return PriceType(max_bytes, scale)


def check_bounded(field_type: Schema, name: str, named: set[str]) -> None:
    """Refuse a field type whose decoding could take more than its bytes: collections, records."""
    if isinstance(field_type, list):  # a union
        for branch in field_type:
            check_bounded(branch, name, named)
    elif isinstance(field_type, str):
        if field_type not in SCALARS and field_type not in named:
            raise UnusableWriterSchema(f"the writer's field {name!r} has type {field_type!r}")
    elif not isinstance(field_type, dict) or not isinstance(kind := field_type.get("type"), str):
        # {"type": {...}} or {"type": [...]}: fastavro reads it, a registry usually refuses it
        raise UnusableWriterSchema(f"the writer's field {name!r} has a type nested in its type")
    elif kind in ("enum", "fixed"):
        named.add(field_type["name"])
    elif kind not in SCALARS:
        raise UnusableWriterSchema(f"the writer's field {name!r} is of type {kind!r}, which no order has")
