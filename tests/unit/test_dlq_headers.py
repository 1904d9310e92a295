"""DLQ headers: the original record's headers kept, plus where it came from and why it failed."""

from datetime import UTC, datetime

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from kafka_project.consumer.retry import TemporaryProcessingError
from kafka_project.dlq.headers import dlq_headers


def test_headers_name_origin_reason_attempts_group_and_time():
    original = Message(
        topic="orders",
        partition=2,
        offset=41,
        key=b"ORD-1",
        value=b"\xc3\x01...",
        headers=[("trace-id", b"abc")],
        timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_123),
    )
    headers = dlq_headers(
        original,
        TemporaryProcessingError("Temporary processing failure"),
        3,
        "order-consumer",
        datetime(2026, 11, 24, 1, 2, 3, 456000, tzinfo=UTC),
    )
    assert headers == [
        ("trace-id", b"abc"),
        ("dlq.original.topic", b"orders"),
        ("dlq.original.partition", b"2"),
        ("dlq.original.offset", b"41"),
        ("dlq.original.timestamp", b"1700000000123"),
        ("dlq.error.type", b"TemporaryProcessingError"),
        ("dlq.error.message", b"Temporary processing failure"),
        ("dlq.attempts", b"3"),
        ("dlq.consumer.group", b"order-consumer"),
        ("dlq.failed.at", b"2026-11-24T01:02:03.456+00:00"),
    ]
