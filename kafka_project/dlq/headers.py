"""The DLQ's header scheme: where a record came from and why it failed (UTF-8 strings)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from confluent_kafka import Message

from kafka_project.cluster import Headers

HEADER_PREFIX = "dlq."
# A DLQ copy is the original record plus the dlq.* headers (under 2 KB), so the DLQ topic must take
# larger records than its source: 2 MiB against Kafka's default of about 1 MB for the source.
# The DLQ topic is created with max.message.bytes=DLQ_MAX_MESSAGE_BYTES (DLQ_TOPIC_CONFIG), and the
# producers that write to it allow as much.
DLQ_MAX_MESSAGE_BYTES = 2 * 1024 * 1024
DLQ_TOPIC_CONFIG = {"max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}
# DLQ copies waiting in librdkafka's queue, at most (queue.buffering.max.kbytes, 1 GiB by default):
# poison records of ~1 MB each, read faster than the broker takes their copies, filled it (1.4 GB of
# RSS for 1,500). Full, produce() waits: the consumer reads no faster than the DLQ takes.
DLQ_QUEUE_KBYTES = 32 * 1024
# A consumed record's headers, as librdkafka hands them over: (name, value or None) pairs.
ReceivedHeaders = list[tuple[str, bytes | None]]
# Keeps the headers' size small and known, so a DLQ copy always fits (see DLQ_MAX_MESSAGE_BYTES).
MAX_ERROR_MESSAGE_CHARS = 500


def dlq_headers(
    original: Message, error: Exception, attempts: int, group_id: str, failed_at: datetime
) -> Headers:
    """The original record's headers plus where it came from and why it failed.

    A record this group dead-lettered before (it carries our dlq.consumer.group; copied back into
    the source by hand or by another tool) is not wrapped again: its old dlq.* set is replaced, and
    the new set keeps the first origin, so the headers never grow round a loop."""
    _, timestamp_ms = original.timestamp()
    origin: dict[str, str | int | None] = {
        "original.topic": original.topic(),
        "original.partition": original.partition(),
        "original.offset": original.offset(),
        "original.timestamp": timestamp_ms,
    }
    headers = received_headers(original)
    earlier = {name[len(HEADER_PREFIX) :]: value for name, value in headers if name.startswith(HEADER_PREFIX)}
    if earlier.get("consumer.group") == group_id.encode():
        origin = {name: decoded(earlier.get(name)) or value for name, value in origin.items()}
        headers = [(name, value) for name, value in headers if not name.startswith(HEADER_PREFIX)]
    added = {
        **origin,
        "error.type": type(error).__name__,
        "error.message": str(error)[:MAX_ERROR_MESSAGE_CHARS],
        "attempts": attempts,
        "consumer.group": group_id,
        "failed.at": failed_at.isoformat(timespec="milliseconds"),
    }
    return [*headers, *((HEADER_PREFIX + name, str(value).encode()) for name, value in added.items())]


# Set by replay on each record it sends back: the group that dead-lettered it. The source topic is
# shared by every group reading it; the others counted the order already, so they pass it over.
REPLAY_GROUP_HEADER = f"{HEADER_PREFIX}replay.group"
REPLAY_COUNT_HEADER = f"{HEADER_PREFIX}replay.count"  # how often replay sent it back


def replayed_for(msg: Message) -> str | None:
    """The group a replayed record was sent back for; None for any other record. Replay sets both
    headers: a record with only the group's is not a replay, and is processed as any other."""
    headers = msg.headers()
    if not headers:  # most records: no header at all
        return None
    named = dict(cast(ReceivedHeaders, headers))
    if REPLAY_COUNT_HEADER not in named:
        return None
    return decoded(named.get(REPLAY_GROUP_HEADER))


def decoded(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


def received_headers(msg: Message) -> ReceivedHeaders:
    """The record's headers; [] when it has none."""
    # The stub also allows a dict and str values (what Message() may be built with by hand); a
    # consumed record's headers are always a list of (str, bytes | None).
    return cast(ReceivedHeaders, msg.headers() or [])


def describe(msg: Message) -> str:
    return f"{msg.topic()} [{msg.partition()}] offset {msg.offset()}"
