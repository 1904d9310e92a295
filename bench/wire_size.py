"""Bytes per order on the wire: single-object encoding (what the producer writes) against an Avro
container file per message (the original assignment's), for the same order.

  python -m bench.wire_size
"""

from __future__ import annotations

import io

import fastavro

from bench.registry import ORDER
from kafka_project.order_codec import OrderCodec


def container_file(order_codec: OrderCodec) -> bytes:
    """One order as a whole Avro container file: header, the schema as JSON, one block."""
    out = io.BytesIO()
    record = {"orderId": ORDER.order_id, "product": ORDER.product, "price": ORDER.price}
    record["customerId"] = ORDER.customer_id
    fastavro.writer(out, order_codec.schema, [record])
    return out.getvalue()


def main() -> None:
    codec = OrderCodec()
    single, container = len(codec.encode(ORDER)), len(container_file(codec))
    print(f"{'encoding':<34}{'bytes':>6}")
    print(f"{'single-object (this project)':<34}{single:>6}")
    print(f"{'container file per message':<34}{container:>6}  ({container / single:.0f}x)")


if __name__ == "__main__":
    main()
