"""Which offset is safe to commit, per partition: the lowest one whose record is not done yet.

A record is done only when its order is counted or the broker has acknowledged its DLQ copy.
Committing offset N says "everything below N is done", so whatever stops the consumer (Ctrl-C in
the middle of a retry, a closed stdout, an exception), a record that is not done keeps the commit
position at or below its offset, and it is delivered again. Records of a partition are handled in
offset order, so a record being handled holds the position simply by not being done yet; one that
is left waiting (for a retry, or for its DLQ copy's acknowledgement) is held explicitly.
"""

from __future__ import annotations

import heapq

PartitionKey = tuple[str, int]  # (topic, partition)


class OffsetTracker:
    def __init__(self) -> None:
        self._next: dict[PartitionKey, int] = {}  # one past the highest offset received
        self._pending: dict[PartitionKey, set[int]] = {}  # received, not done yet
        # The same offsets as a min-heap, so that the lowest is found in O(log n) even with many
        # DLQ copies in flight; offsets done since they were pushed are dropped lazily.
        self._lowest: dict[PartitionKey, list[int]] = {}

    def held(self, key: PartitionKey, offset: int) -> None:
        """The record is left waiting: it holds the commit position until released() or done()."""
        self._pending.setdefault(key, set()).add(offset)
        heapq.heappush(self._lowest.setdefault(key, []), offset)
        self._next[key] = max(self._next.get(key, 0), offset + 1)

    def released(self, key: PartitionKey, offset: int) -> None:
        """A held record is done (e.g. its DLQ copy acknowledged). Harmless for a forgotten partition."""
        if key in self._pending:
            self._pending[key].discard(offset)

    def done(self, key: PartitionKey, offset: int) -> None:
        """The record being handled (held or not) is done: the position may pass it."""
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key], self._lowest[key] = set(), []
        elif offset in pending:
            pending.discard(offset)
            return
        self._next[key] = max(self._next.get(key, 0), offset + 1)

    def commit_position(self, key: PartitionKey) -> int | None:
        """The offset to commit (the next to read); None for a partition with nothing received."""
        if key not in self._next:
            return None
        pending, lowest = self._pending[key], self._lowest[key]
        while lowest and lowest[0] not in pending:
            heapq.heappop(lowest)
        if len(lowest) > 2 * len(pending) + 64:  # done offsets piling up behind a slow one
            lowest[:] = sorted(pending)  # a sorted list is a heap
        return lowest[0] if lowest else self._next[key]

    def forget(self, keys: list[PartitionKey]) -> None:
        """Drop revoked partitions: their new owner starts from the committed offset."""
        for key in keys:
            self._next.pop(key, None)
            self._pending.pop(key, None)
            self._lowest.pop(key, None)
