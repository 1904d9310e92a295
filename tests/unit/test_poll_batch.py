"""poll_batch: a record polled just before a rebalance that consume() then runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka_project.consumer.consumer import poll_batch


@dataclass
class Record:
    """The parts of a confluent_kafka.Message that poll_batch reads."""

    partition_number: int
    offset_number: int

    def topic(self) -> str:
        return "orders"

    def partition(self) -> int:
        return self.partition_number

    def offset(self) -> int:
        return self.offset_number

    def error(self) -> None:
        return None


@dataclass
class Processor:
    """What poll_batch asks of the processor; the rebalance callbacks fill `moved`."""

    moved: set = field(default_factory=set)
    rebalances: int = 0

    def poll_timeout(self, longest: float) -> float:
        return longest

    def room(self) -> int:
        return 100


@dataclass
class RebalancingConsumer:
    """poll() returns `first`; consume() runs a rebalance that moves `moving`, then returns `more`."""

    first: Record
    more: list[Record]
    moving: list[int]
    processor: Processor

    def poll(self, timeout: float) -> Record:
        return self.first

    def consume(self, num_messages: int, timeout: float) -> list[Record]:
        self.processor.rebalances += 1
        self.processor.moved |= {("orders", number) for number in self.moving}
        return self.more


def batch(moving: list[int]) -> list[tuple[int, int]]:
    processor = Processor()
    consumer = RebalancingConsumer(Record(0, 7), [Record(2, 3)], moving, processor)
    return [(r.partition(), r.offset()) for r in poll_batch(consumer, processor)]  # type: ignore[arg-type]


def test_a_record_whose_partition_moved_is_dropped():
    """Eager: every partition is revoked (and assigned again from its committed offset)."""
    assert batch(moving=[0, 1, 2]) == [(2, 3)]


def test_a_record_whose_partition_a_cooperative_rebalance_left_alone_is_kept():
    """Cooperative and KIP-848: partition 0 stays, so it is not fetched again: dropping offset 7
    would let the commit position pass it (a loss found in review)."""
    assert batch(moving=[1]) == [(0, 7), (2, 3)]
