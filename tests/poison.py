"""Records that are not valid orders, by kind, with the error type their DLQ copy must name: the
one list the integration tests and the fault suite send."""

from __future__ import annotations

from decimal import Decimal

from kafka_project.order_codec import Order, OrderCodec

from .avro_bytes import order_body

codec = OrderCodec()
VALID = codec.encode(Order("ORD-GOOD-1", "Tablet", Decimal("10.00")))

POISON: dict[str, tuple[bytes | None, str]] = {
    "random bytes": (b"\x8f" * 40, "UnknownSchemaError"),
    "empty value": (b"", "InvalidOrderError"),
    "null value": (None, "InvalidOrderError"),  # a tombstone
    "truncated record": (VALID[:-4], "InvalidOrderError"),
    "another schema": (b"\xc3\x01" + b"\x11" * 8 + VALID[10:], "UnknownSchemaError"),
    "negative price": (codec.encode(Order("ORD-NEG", "Tablet", Decimal("-1.00"))), "InvalidOrderError"),
    "absurd price": (codec.encode(Order("ORD-BIG", "Tablet", Decimal("9999999.00"))), "InvalidOrderError"),
    "non-UTF-8 text": (VALID.replace(b"Tablet", b"Tab\xfe\xfft"), "InvalidOrderError"),
}

# Hostile records: decoding them was quadratic, or overflowed (a traceback on every restart).
HOSTILE: dict[str, tuple[bytes | None, str]] = {
    "price of 416,000 bytes": (codec.header + order_body(b"\x7f" * 416_000), "InvalidOrderError"),
    "price of 6 bytes": (codec.header + order_body(b"\x00\x00\x00\x00\x30\x39"), "InvalidOrderError"),
    "product of 100,000 characters": (
        codec.encode(Order("ORD-LONG", "x" * 100_000, Decimal("1.00"))),
        "InvalidOrderError",
    ),
}
