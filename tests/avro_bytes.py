"""Avro bodies written byte by byte, for records no Avro writer would produce (hostile lengths)."""

from __future__ import annotations


def avro_long(n: int) -> bytes:
    """Avro's zig-zag varint."""
    zigzag, out = (n << 1) ^ (n >> 63), bytearray()
    while zigzag > 0x7F:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


def avro_bytes(data: bytes) -> bytes:
    return avro_long(len(data)) + data


def order_body(price: bytes) -> bytes:
    """orderId, product, the price's bytes as given, customerId null: the current schema's field order."""
    return avro_bytes(b"ORD-1") + avro_bytes(b"Tablet") + avro_bytes(price) + avro_long(0)
