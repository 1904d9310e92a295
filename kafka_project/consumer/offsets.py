"""Which offset is safe to commit, per partition, when some records are still on their way to the DLQ.

Orders are processed in order, but a DLQ copy is acknowledged later, asynchronously. Committing
offset N+1 says "everything up to N is done", so the commit position of a partition must stop at
the lowest record whose DLQ copy the broker has not acknowledged yet.
"""

from __future__ import annotations

PartitionKey = tuple[str, int]  # (topic, partition)


class OffsetTracker:
    def __init__(self) -> None:
        self._next: dict[PartitionKey, int] = {}  # one past the highest offset seen
        self._in_flight: dict[PartitionKey, set[int]] = {}

    def seen(self, key: PartitionKey, offset: int) -> None:
        """A record was received; it is done unless hold() is called for it."""
        self._next[key] = offset + 1
        self._in_flight.setdefault(key, set())

    def hold(self, key: PartitionKey, offset: int) -> None:
        """The record is not done yet (its DLQ copy is not acknowledged)."""
        self._in_flight[key].add(offset)

    def release(self, key: PartitionKey, offset: int) -> None:
        if key in self._in_flight:
            self._in_flight[key].discard(offset)

    def commit_position(self, key: PartitionKey) -> int | None:
        """The offset to commit (next to read); None for a partition with nothing seen."""
        if key not in self._next:
            return None
        in_flight = self._in_flight[key]
        return min(in_flight) if in_flight else self._next[key]

    def forget(self, keys: list[PartitionKey]) -> None:
        """Drop revoked partitions: their new owner starts from the committed offset."""
        for key in keys:
            self._next.pop(key, None)
            self._in_flight.pop(key, None)
