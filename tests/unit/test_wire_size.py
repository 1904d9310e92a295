"""bench.wire_size: the container file it measures is a real one, holding the same order."""

import io

import fastavro

from bench.registry import ORDER
from bench.wire_size import container_file
from kafka_project.order_codec import OrderCodec


def test_the_container_file_holds_the_order_the_single_object_record_holds():
    codec = OrderCodec()
    container = container_file(codec)
    (record,) = fastavro.reader(io.BytesIO(container))
    assert codec.decode(codec.encode(ORDER)) == ORDER
    assert (record["orderId"], record["product"], record["price"], record["customerId"]) == tuple(ORDER)
    assert len(container) > 10 * len(codec.encode(ORDER))  # the schema JSON in every message
