"""DLQ headers: the original record's headers kept, plus where it came from and why it failed."""

from datetime import UTC, datetime

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

from kafka_project.consumer.retry import TemporaryProcessingError
from kafka_project.dlq.headers import dlq_headers, replayed_for


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


def copy_of(record: Message, headers, topic: str, offset: int) -> Message:
    """The record as it arrives again, copied into `topic` with the given headers."""
    return Message(
        topic=topic, partition=0, offset=offset, key=record.key(), value=record.value(), headers=headers
    )


def test_a_record_this_group_dead_lettered_before_is_not_wrapped_again():
    """Copied round a loop a thousand times, it keeps one dlq.* set, naming the first origin."""
    failed_at = datetime(2026, 12, 3, tzinfo=UTC)
    record = Message(
        topic="orders", partition=1, offset=7, key=b"k", value=b"v", headers=[("trace-id", b"abc")]
    )
    for lap in range(1000):
        record = copy_of(
            record, dlq_headers(record, ValueError("bad"), 0, "order-consumer", failed_at), "loop", lap
        )
    headers = dlq_headers(record, ValueError("bad"), 0, "order-consumer", failed_at)
    assert len(headers) == 1 + 9
    assert dict(headers)["dlq.original.topic"] == b"orders"
    assert dict(headers)["dlq.original.offset"] == b"7"
    assert headers[0] == ("trace-id", b"abc")


def test_another_group_s_dlq_copy_is_wrapped_with_its_own_origin():
    failed_at = datetime(2026, 12, 3, tzinfo=UTC)
    first = Message(topic="orders", partition=1, offset=7, key=b"k", value=b"v", headers=[])
    copy = copy_of(first, dlq_headers(first, ValueError("bad"), 0, "group-a", failed_at), "orders-dlq", 3)
    headers = dlq_headers(copy, ValueError("bad"), 0, "group-b", failed_at)
    assert len(headers) == 9 + 9
    assert [v for k, v in headers if k == "dlq.original.topic"] == [b"orders", b"orders-dlq"]


def test_only_a_record_with_both_of_replays_headers_is_replayed_for_a_group():
    """Replay sets dlq.replay.count and dlq.replay.group; the group's header alone (any producer
    can set it) does not make a consumer pass a real order over."""
    both = [("dlq.replay.count", b"1"), ("dlq.replay.group", b"order-consumer")]
    assert replayed_for(Message(topic="orders", headers=both)) == "order-consumer"
    assert replayed_for(Message(topic="orders", headers=both[1:])) is None
    assert replayed_for(Message(topic="orders", headers=both[:1])) is None  # replayed by an older replay
    assert replayed_for(Message(topic="orders")) is None
