"""Orders in progress, and when each one's next try is due.

Orders with the same key wait in a lane, in offset order; only a lane's first order is tried, and
after a failed try it is due again a backoff later. Lanes overlap, so an order waiting for its next
try holds back the orders of its own key, never the partition: a schedule, not a sleep.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field

from confluent_kafka import Message

from kafka_project.consumer.offsets import PartitionKey
from kafka_project.order_codec import Order, record_size

Lane = tuple[str, int, bytes | int]  # topic, partition, record key (the offset when it has none)


@dataclass(eq=False)
class Work:
    """One order in progress: the record it came in, and how many tries it has had."""

    msg: Message = field(repr=False)
    order: Order
    partition: PartitionKey
    offset: int
    lane: Lane
    tries: int = 0
    size: int = 0  # its record's bytes, once it waits in the schedule


def lane_of(msg: Message, partition: PartitionKey, offset: int) -> Lane:
    key = msg.key()
    return (*partition, offset if key is None else key)  # no key, no order to keep


class RetrySchedule:
    def __init__(self) -> None:
        self._lanes: dict[Lane, deque[Work]] = {}
        # Lane heads by the time their next try is due; the sequence keeps equal times first-in first-out.
        self._due: list[tuple[float, int, Work]] = []
        self._sequence = itertools.count()
        self.size = 0  # orders in lanes: waiting for their next try or for an earlier order of their key
        self.bytes = 0  # the size of their records: values, keys and headers

    def busy(self, lane: Lane) -> bool:
        return lane in self._lanes

    def add(self, work: Work, due_at: float) -> None:
        """Queue an order in its lane; when the lane was empty it is the head, tried at due_at."""
        lane = self._lanes.get(work.lane)
        if lane is None:
            self._lanes[work.lane] = deque([work])
            self._push(due_at, work)
        else:
            lane.append(work)
        work.size = record_size(work.msg)
        self.size += 1
        self.bytes += work.size

    def try_again(self, head: Work, due_at: float) -> None:
        self._push(due_at, head)

    def finished(self, work: Work, now: float) -> None:
        """The order is counted or dead-lettered: the next order of its key is due now."""
        lane = self._lanes.get(work.lane) if self.size else None
        if not lane or lane[0] is not work:
            return  # never queued: done at its first try
        lane.popleft()
        self.size -= 1
        self.bytes -= work.size
        if lane:
            self._push(now, lane[0])
        else:
            del self._lanes[work.lane]

    def pop_due(self, now: float) -> Work | None:
        if self._due and self._due[0][0] <= now:
            return heapq.heappop(self._due)[2]
        return None

    def seconds_to_next(self, now: float) -> float | None:
        return max(0.0, self._due[0][0] - now) if self._due else None

    def drop(self, partitions: set[PartitionKey]) -> None:
        """Forget the orders of revoked partitions: their new owner reads them again."""
        for lane in [lane for lane in self._lanes if lane[:2] in partitions]:
            dropped = self._lanes.pop(lane)
            self.size -= len(dropped)
            self.bytes -= sum(work.size for work in dropped)
        self._due = [entry for entry in self._due if entry[2].partition not in partitions]
        heapq.heapify(self._due)

    def _push(self, due_at: float, work: Work) -> None:
        heapq.heappush(self._due, (due_at, next(self._sequence), work))
