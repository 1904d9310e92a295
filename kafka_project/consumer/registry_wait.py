"""Records the Schema Registry cannot help decode yet: not poison, so they wait for it.

A record whose schema id the registry cannot be asked about (down, unreachable) is put back: its
partition is sought back to it and paused, so nothing past it is taken (and so nothing past it
can be committed), and it is fetched again after a backoff that doubles up to a limit, with one
line each time. Other partitions go on; the first record decoded after a wait says so.
"""

from __future__ import annotations

import sys
import time

from confluent_kafka import Consumer, TopicPartition

from kafka_project.consumer.offsets import PartitionKey

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0


class RegistryWait:
    def __init__(self) -> None:
        self.waiting: dict[PartitionKey, int] = {}  # sought back to this offset and paused until retry_at
        self.resumed: set[PartitionKey] = set()  # resumed; their next decoded record ends the wait
        self.backoff_s = 0.0
        self.retry_at = 0.0

    def hold(
        self, consumer: Consumer, partition: PartitionKey, offset: int, what: str, reason: object
    ) -> None:
        """Put the record at `offset` back; it is read again after the backoff."""
        put_back(consumer, partition, offset)
        self.waiting[partition] = offset
        self.resumed.discard(partition)
        now = time.monotonic()
        if now >= self.retry_at:  # the first record of this round: back off further, and say so
            self.backoff_s = min(max(2 * self.backoff_s, FIRST_BACKOFF_S), MAX_BACKOFF_S)
            self.retry_at = now + self.backoff_s
            print(
                f"Waiting for the Schema Registry ({reason}): {what} is read again in {self.backoff_s:g} s",
                file=sys.stderr,
            )

    def skipped(self, consumer: Consumer, partition: PartitionKey, offset: int) -> None:
        """A record of a waiting partition: one fetched before it was sought back (nothing to
        do), or the held record itself fetched again because something resumed the partition
        early: sought back and paused again, so that nothing past it is ever taken."""
        if offset == self.waiting[partition]:
            put_back(consumer, partition, offset)

    def resume_due(self, consumer: Consumer) -> None:
        """Once the backoff has passed, fetch the waiting partitions again from their records."""
        if self.waiting and time.monotonic() >= self.retry_at:
            consumer.resume([TopicPartition(topic, number) for topic, number in self.waiting])
            self.resumed |= set(self.waiting)
            self.waiting.clear()

    def decoded(self, partition: PartitionKey) -> None:
        """A record of `partition` was decoded: if it had waited, the registry answers again."""
        if partition in self.resumed:
            self.resumed.discard(partition)
            if not self.resumed and not self.waiting:  # every partition that waited reads on
                self.backoff_s = 0.0
                print("The Schema Registry answers again: reading on", file=sys.stderr)

    def forget(self, revoked: set[PartitionKey]) -> None:
        """Revoked partitions: their new owner reads them from the committed offset."""
        for partition in revoked:
            self.waiting.pop(partition, None)
        self.resumed -= revoked


def put_back(consumer: Consumer, partition: PartitionKey, offset: int) -> None:
    """Fetch the partition from `offset` again, and not before it is resumed."""
    topic, number = partition
    consumer.seek(TopicPartition(topic, number, offset))
    consumer.pause([TopicPartition(topic, number)])
