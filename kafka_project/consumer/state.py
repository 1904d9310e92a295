"""Each partition's aggregate under exactly-once: in the committed offset, and published in `orders-stats`.

The state a consumer restores from is the metadata of the offset committed in the transaction,
`{"count": 12, "total": "8342.17"}`: offset and aggregate are one record in the group's offsets,
read back with one `committed()` call however long the group has run.

Every transaction also publishes one snapshot per partition to the compacted `orders-stats` topic,
for `stats.py` and other readers, keyed `group:topic:partition`, value JSON:
  {"group": "order-consumer", "topic": "orders", "partition": 0,
   "count": 12, "total": "8342.17", "next_offset": 15}

A share consumer (share_consumer.py) has no partition of its own: it publishes its process's
aggregate, keyed `group:consumer`, value JSON:
  {"group": "order-workers", "consumer": "host-4242-9f8e7d6c", "count": 12, "total": "8342.17"}
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from decimal import Decimal

from kafka_project.cluster import read_topic
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.offsets import PartitionKey

# Only the latest snapshot per key matters: a compacted topic keeps it and forgets the rest.
STATS_TOPIC_CONFIG = {"cleanup.policy": "compact"}


@dataclass(frozen=True)
class PartitionState:
    group: str
    topic: str
    partition: int
    count: int
    total: Decimal
    next_offset: int

    @property
    def key(self) -> bytes:
        return f"{self.group}:{self.topic}:{self.partition}".encode()

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "group": self.group,
                "topic": self.topic,
                "partition": self.partition,
                "count": self.count,
                "total": str(self.total),
                "next_offset": self.next_offset,
            }
        ).encode()

    @classmethod
    def from_fields(cls, fields: dict) -> PartitionState:
        aggregate = RunningAverage.restored(fields["count"], fields["total"])
        return cls(
            text(fields, "group"),
            text(fields, "topic"),
            whole_number(fields, "partition"),
            aggregate.count,
            aggregate.total_price,
            whole_number(fields, "next_offset"),
        )

    def aggregate(self) -> RunningAverage:
        return RunningAverage(self.count, self.total)


@dataclass(frozen=True)
class ConsumerState:
    """One share consumer process's aggregate: what it counted since it started."""

    group: str
    consumer: str
    count: int
    total: Decimal

    @property
    def key(self) -> bytes:
        return f"{self.group}:{self.consumer}".encode()

    def to_json(self) -> bytes:
        return json.dumps(
            {"group": self.group, "consumer": self.consumer, "count": self.count, "total": str(self.total)}
        ).encode()

    @classmethod
    def from_fields(cls, fields: dict) -> ConsumerState:
        aggregate = RunningAverage.restored(fields["count"], fields["total"])
        return cls(text(fields, "group"), text(fields, "consumer"), aggregate.count, aggregate.total_price)

    def aggregate(self) -> RunningAverage:
        return RunningAverage(self.count, self.total)


def text(fields: dict, name: str) -> str:
    if not isinstance(value := fields[name], str):
        raise TypeError(f"{name} is not a string")
    return value


def whole_number(fields: dict, name: str) -> int:
    if type(value := fields[name]) is not int or value < 0:
        raise ValueError(f"{name} is not a whole number")
    return value


def aggregate_to_metadata(aggregate: RunningAverage) -> str:
    """The aggregate as the metadata of the offset committed with it (Kafka allows 4 KB)."""
    return json.dumps({"count": aggregate.count, "total": str(aggregate.total_price)})


def aggregate_from_metadata(metadata: str | None) -> RunningAverage | None:
    """The aggregate committed with an offset; None when the offset carries none (it was committed
    without --exactly-once, or by an offset reset) or something else."""
    try:
        fields = json.loads(metadata or "")
        return RunningAverage.restored(fields["count"], fields["total"])
    except (ValueError, KeyError, TypeError, ArithmeticError):
        return None


def read_states(bootstrap_servers: str, stats_topic: str, group: str) -> dict[PartitionKey, PartitionState]:
    """The latest committed snapshot of each partition the group has processed."""
    states = read_snapshots(bootstrap_servers, stats_topic, group)
    return {(s.topic, s.partition): s for s in states if isinstance(s, PartitionState)}


def read_consumer_states(bootstrap_servers: str, stats_topic: str, group: str) -> list[ConsumerState]:
    """The latest snapshot of each share consumer process that worked in the group."""
    return [s for s in read_snapshots(bootstrap_servers, stats_topic, group) if isinstance(s, ConsumerState)]


def read_snapshots(
    bootstrap_servers: str, stats_topic: str, group: str
) -> list[PartitionState | ConsumerState]:
    """The latest snapshot per key of the group's partitions and share consumers, in key order."""
    latest: dict[bytes, PartitionState | ConsumerState] = {}
    for msg in read_topic(bootstrap_servers, stats_topic, config=STATS_TOPIC_CONFIG):
        value = msg.value()
        if value is None:
            continue
        try:
            state = snapshot_from_json(value)
        except (ValueError, KeyError, TypeError, ArithmeticError, RecursionError):
            print(f"warning: {stats_topic} offset {msg.offset()} is not a snapshot; ignored", file=sys.stderr)
            continue
        if state.group == group:
            latest[state.key] = state
    return [latest[key] for key in sorted(latest)]


def snapshot_from_json(value: bytes) -> PartitionState | ConsumerState:
    """A snapshot record's value, of either kind; ValueError, KeyError, TypeError or
    ArithmeticError when it is not one this program wrote."""
    fields = json.loads(value)
    if not isinstance(fields, dict):
        raise TypeError("not a JSON object")
    return (ConsumerState if "consumer" in fields else PartitionState).from_fields(fields)


def combined(aggregates: list[RunningAverage]) -> RunningAverage:
    """Global count and total over partitions: the average is sum(totals) / sum(counts)."""
    return RunningAverage(
        sum(a.count for a in aggregates), sum((a.total_price for a in aggregates), Decimal("0.00"))
    )
