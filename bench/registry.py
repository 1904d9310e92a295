"""The Schema Registry's wire format against single-object encoding: the codec in µs (schemas
cached, as in steady state), and the producer and consumer in orders/s."""

from __future__ import annotations

import timeit
from decimal import Decimal

from bench import throughput
from bench.common import Broker, Row, median_of_3, ratio
from kafka_project.order_codec import Order, OrderCodec
from kafka_project.registry import SchemaRegistry

ORDER = Order("ORD-3F2A9C1B-000042", "Headphones", Decimal("294.48"), "customer-7")


def codec_us(codec: OrderCodec) -> tuple[float, float]:
    """Encode and decode of one order, µs (best of 3 runs of 100,000)."""
    value = codec.encode(ORDER)
    runs = 100_000
    encode = min(timeit.repeat(lambda: codec.encode(ORDER), number=runs, repeat=3)) / runs * 1e6
    decode = min(timeit.repeat(lambda: codec.decode(value), number=runs, repeat=3)) / runs * 1e6
    return encode, decode


def measure(broker: Broker, url: str, orders: int, figures: dict) -> list[Row]:
    """Registry rows next to the single-object figures already in `figures`."""
    registry_flags = ("--schema-registry", url)
    codec = OrderCodec(schema_registry=SchemaRegistry(url, {}))
    topic = broker.topic("registry")
    codec.write_registry_format(topic)
    figures["registry_encode_us"], figures["registry_decode_us"] = codec_us(codec)
    figures["registry_producer_orders_per_s"] = median_of_3(
        lambda: throughput.producer_rate(broker, topic, orders // 3, *registry_flags)
    )
    if missing := orders - 3 * (orders // 3):
        throughput.producer_rate(broker, topic, missing, *registry_flags)
    figures["registry_consumer_orders_per_s"] = median_of_3(
        lambda: throughput.consumer_rate(broker, topic, orders, "--failure-rate", "0", *registry_flags)
    )
    return [
        (
            "Avro encode / decode, Schema Registry format (µs per order)",
            f"{figures['registry_encode_us']:.2f} / {figures['registry_decode_us']:.2f}",
            f"single-object {figures['encode_us']:.2f} / {figures['decode_us']:.2f}",
            ratio(figures["registry_decode_us"], figures["decode_us"]),
        ),
        (
            "producer, Schema Registry format (orders/s)",
            f"{figures['registry_producer_orders_per_s']:,.0f}",
            f"single-object {figures['producer_orders_per_s']:,.0f}",
            ratio(figures["registry_producer_orders_per_s"], figures["producer_orders_per_s"]),
        ),
        (
            f"consumer, failure rate 0, Schema Registry format, {orders:,} orders (orders/s)",
            f"{figures['registry_consumer_orders_per_s']:,.0f}",
            f"single-object {figures['consumer_orders_per_s']:,.0f}",
            ratio(figures["registry_consumer_orders_per_s"], figures["consumer_orders_per_s"]),
        ),
    ]
