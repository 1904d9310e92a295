"""Per-partition aggregate snapshots, kept in the compacted `orders-stats` topic.

One record per (group, topic, partition), keyed `group:topic:partition`, value JSON:
  {"group": "order-consumer", "topic": "orders", "partition": 0,
   "count": 12, "total": "8342.17", "next_offset": 15}
`next_offset` is the consumer offset committed in the same transaction, so a snapshot and the
group's position always agree; compaction keeps only the latest snapshot of each partition.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from decimal import Decimal

from kafka_project.cluster import read_topic
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.offsets import PartitionKey


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
    def from_json(cls, value: bytes) -> PartitionState:
        fields = json.loads(value)
        return cls(
            fields["group"],
            fields["topic"],
            int(fields["partition"]),
            int(fields["count"]),
            Decimal(fields["total"]),
            int(fields["next_offset"]),
        )

    def aggregate(self) -> RunningAverage:
        return RunningAverage(self.count, self.total)


def read_states(bootstrap_servers: str, stats_topic: str, group: str) -> dict[PartitionKey, PartitionState]:
    """The latest committed snapshot of each partition the group has processed."""
    latest: dict[PartitionKey, PartitionState] = {}
    for msg in read_topic(bootstrap_servers, stats_topic):
        if msg.value() is None:
            continue
        try:
            state = PartitionState.from_json(msg.value())
        except (ValueError, KeyError, TypeError, ArithmeticError):
            print(f"warning: {stats_topic} offset {msg.offset()} is not a snapshot; ignored", file=sys.stderr)
            continue
        if state.group == group:
            latest[(state.topic, state.partition)] = state
    return latest


def combined(aggregates: list[RunningAverage]) -> RunningAverage:
    """Global count and total over partitions: the average is sum(totals) / sum(counts)."""
    return RunningAverage(
        sum(a.count for a in aggregates), sum((a.total_price for a in aggregates), Decimal("0.00"))
    )
