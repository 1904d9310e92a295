"""Exactly-once processing: DLQ copies, aggregate snapshots and consumer offsets in one Kafka transaction.

Orders are tried and retried outside any transaction. A done record's outcome (its price, or its
DLQ copy) waits until the partition's commit position (its lowest record not done) passes it; then
one transaction, every COMMIT_INTERVAL_S or when the topic goes quiet, writes:
  begin -> DLQ copies of the records passed + one `orders-stats` snapshot per partition
        -> send_offsets_to_transaction(positions, each carrying its partition's aggregate) -> commit
so the aggregate committed with an offset covers exactly the orders below it. Either all of it
becomes visible to read_committed readers, or none of it, and memory changes only after the commit.
On every assignment each partition's aggregate is restored from the metadata of its committed
offset (one committed() call, whatever the history), and consumption starts at that offset.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from copy import copy
from dataclasses import dataclass, field
from decimal import Decimal

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from kafka_project.cluster import produce
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.offsets import PartitionKey
from kafka_project.consumer.processor import OrderProcessor, partition_key, position_of
from kafka_project.consumer.schedule import Work
from kafka_project.consumer.state import (
    PartitionState,
    aggregate_from_metadata,
    aggregate_to_metadata,
    combined,
)
from kafka_project.dlq.dlq_producer import DeadLetterPublisher
from kafka_project.errors import UserError
from kafka_project.order_codec import OrderCodec

COMMIT_INTERVAL_S = 1.0  # while records keep coming; a quiet topic commits at once
API_TIMEOUT_S = 30.0  # for one transactional call, retries included
RESTORE_TIMEOUT_S = 30.0
FINAL_COMMIT_TRIES = 3  # at a clean stop; each after the first with a new producer
PRODUCER_BLOCKED = KafkaError._TIMED_OUT  # raised fatal by call_with_deadline(), never by librdkafka


@dataclass
class DeadLetter:
    """An order that failed for good: its DLQ copy is written by the commit that passes its offset."""

    msg: Message
    error: Exception
    attempts: int
    label: str


# What a done record adds to the committed state: a price, a DLQ copy, or nothing (passed over).
Outcome = Decimal | DeadLetter | None


@dataclass
class Transaction:
    """One commit: the records it passes, the aggregates they make, the DLQ copies it writes."""

    positions: dict[PartitionKey, int] = field(default_factory=dict)
    aggregates: dict[PartitionKey, RunningAverage] = field(default_factory=dict)
    passed: dict[PartitionKey, list[int]] = field(default_factory=dict)  # settled offsets it commits
    dead_letter_labels: list[str] = field(default_factory=list)
    begun: bool = False  # begin_transaction() succeeded
    committed: bool = False  # commit_transaction() returned: nothing left to abort


def retry_retriable(call: Callable[[], None], timeout_s: float = API_TIMEOUT_S) -> None:
    """Transactional API calls may fail with a retriable error; the documented answer is to call
    again. With a growing pause between calls, and not past timeout_s: then the error is raised."""
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    while True:
        try:
            call_with_deadline(call, timeout_s + 5)
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 1.0)


def call_with_deadline(call: Callable[[], None], deadline_s: float) -> None:
    """Run a transactional call on a thread of its own and wait for it at most deadline_s.

    librdkafka can block in send_offsets_to_transaction() past its timeout, even after the broker
    is back (librdkafka issues #5456, #5511; seen here after a broker restart: over 5 minutes).
    By then the broker has aborted the transaction (transaction.timeout.ms is 10 s), so nothing of
    it can become visible: the caller gives this producer up (PRODUCER_BLOCKED) and starts over
    from the last commit with a new one. The blocked thread is left behind."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=run, name="kafka-transactional-call", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if not outcome:
        raise KafkaException(
            KafkaError(
                PRODUCER_BLOCKED,
                f"a transactional call was still blocked after {deadline_s:.0f} s",
                fatal=True,
            )
        )
    if outcome[0] is not None:
        raise outcome[0]


def init_transactions(producer: Producer) -> None:
    """Retried while the error is retriable (e.g. the coordinator still loading after a restart)."""
    try:
        retry_retriable(lambda: producer.init_transactions(API_TIMEOUT_S))
    except KafkaException as exc:
        raise UserError(f"cannot start Kafka transactions: {exc.args[0].str()}") from exc


class ExactlyOnceProcessor(OrderProcessor):
    def __init__(
        self,
        consumer: Consumer,
        dlq: DeadLetterPublisher,
        codec: OrderCodec,
        args: argparse.Namespace,
        *,
        new_producer: Callable[[], Producer],
        stats_topic: str,
        group_id: str,
    ):
        super().__init__(consumer, dlq, codec, args)
        self.new_producer = new_producer  # a transactional producer with a transactional.id of its own
        self.stats_topic = stats_topic
        self.group_id = group_id
        # Per partition: the committed offset, and the aggregate committed with it (exactly the
        # orders below that offset) ...
        self.positions: dict[PartitionKey, int] = {}
        self.committed: dict[PartitionKey, RunningAverage] = {}
        # ... the outcomes of done records the commit position has not passed yet (an order done
        # above one still retried waits here), and what is shown: committed plus counted since.
        self.settled: dict[PartitionKey, dict[int, Outcome]] = {}
        self.counted: dict[PartitionKey, RunningAverage] = {}
        self.txn: Transaction | None = None
        self.aborted_by_us = False  # the last failed commit was aborted by its producer: none of it can land
        self.last_commit_at = time.monotonic()
        init_transactions(self.producer)

    @property
    def producer(self) -> Producer:
        """The transactional producer: the one the DLQ publisher writes with."""
        return self.dlq.producer

    # -- outcomes wait for the commit position ----------------------------------------------
    def count(self, work: Work) -> None:
        self.settled[work.partition][work.offset] = work.order.price
        self.counted[work.partition].add(work.order.price)
        self.offsets.done(work.partition, work.offset)

    def dead_letter(self, msg: Message, error: Exception, attempts: int, label: str) -> None:
        key, offset = position_of(msg)
        self.settled[key][offset] = DeadLetter(msg, error, attempts, label)
        self.offsets.done(key, offset)

    def skip(self, partition: PartitionKey, offset: int) -> None:
        self.settled[partition][offset] = None
        self.offsets.done(partition, offset)

    def running_average(self) -> RunningAverage:
        return combined(list(self.counted.values()))

    def checkpoint(self, quiet: bool = False) -> None:
        """Commit every COMMIT_INTERVAL_S, and as soon as the topic goes quiet with nothing in progress."""
        if time.monotonic() - self.last_commit_at >= COMMIT_INTERVAL_S or (quiet and not self.schedule.size):
            self.commit()

    # -- the transaction ----------------------------------------------------------------------
    def commit(self, recover: bool = True) -> None:
        """One transaction: for each partition whose commit position moved, the DLQ copies of the
        records it passes, its snapshot, and the offset carrying the aggregate of exactly the orders
        below it. Memory changes only once the broker committed it."""
        self.last_commit_at = time.monotonic()
        txn = Transaction(positions=self.positions_to_commit())
        if not txn.positions:
            return
        self.txn = txn
        try:
            self.producer.begin_transaction()
            txn.begun = True
            offsets = []
            for (topic, partition), position in txn.positions.items():
                aggregate = self.fold((topic, partition), position, txn)
                offsets.append(TopicPartition(topic, partition, position, aggregate_to_metadata(aggregate)))
                state = PartitionState(
                    self.group_id, topic, partition, aggregate.count, aggregate.total_price, position
                )
                produce(self.producer, self.stats_topic, key=state.key, value=state.to_json())
            retry_retriable(
                lambda: self.producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), API_TIMEOUT_S
                )
            )
            retry_retriable(lambda: self.producer.commit_transaction(API_TIMEOUT_S))
            txn.committed = True
        except KafkaException as exc:
            self.txn = None
            self.abort(txn, exc.args[0], recover)
            return
        for key, position in txn.positions.items():
            self.positions[key] = position
            self.committed[key] = txn.aggregates[key]
            settled = self.settled[key]
            for offset in txn.passed[key]:
                del settled[offset]
        self.txn = None
        self.dead_lettered += len(txn.dead_letter_labels)
        for label in txn.dead_letter_labels:
            self.names.forget()
            self.say(f"Moved to DLQ: {label}\n")

    def positions_to_commit(self) -> dict[PartitionKey, int]:
        moved = {}
        for key in self.assigned:
            position = self.offsets.commit_position(key)
            if position is not None and position != self.positions.get(key):
                moved[key] = position
        return moved

    def fold(self, key: PartitionKey, position: int, txn: Transaction) -> RunningAverage:
        """The committed aggregate plus the outcomes below the new position; their DLQ copies are
        written into the transaction, in offset order."""
        aggregate = copy(self.committed[key])
        settled = self.settled[key]
        txn.passed[key] = sorted(offset for offset in settled if offset < position)
        for offset in txn.passed[key]:
            outcome = settled[offset]
            if isinstance(outcome, DeadLetter):
                self.dlq.send(outcome.msg, outcome.error, outcome.attempts, on_acked=lambda: None)
                txn.dead_letter_labels.append(outcome.label)
            elif outcome is not None:  # None: passed over, counted by nothing
                aggregate.add(outcome)
        txn.aggregates[key] = aggregate
        return aggregate

    def abort(self, txn: Transaction, reason: KafkaError, recover: bool = True) -> None:
        """Nothing of the transaction became visible, and memory was not changed: the next commit
        writes the same outcomes again.

        A fatal error (the producer was fenced, e.g. because the broker aborted a transaction that
        outlived transaction.timeout.ms while it was down) cannot be aborted by this producer, and
        an abort can fail too (its coordinator killed mid-call): then start over with a new one
        from the last commit the broker holds (recover=True). Whether the lost transaction landed
        or not, that read says which: a read_committed consumer's committed() waits for it.
        """
        self.errors += 1
        self.aborted_by_us = False
        try:
            if reason.fatal():
                raise KafkaException(reason)
            if txn.begun:
                retry_retriable(lambda: self.producer.abort_transaction(API_TIMEOUT_S))
        except KafkaException as exc:
            if not recover and exc.args[0].code() == KafkaError._STATE:
                return  # stopping, and the transaction already ended (committed just before the stop)
            if recover:
                self.restart_producer(exc.args[0])
            else:
                print(f"transaction lost ({exc.args[0].str()})", file=sys.stderr)
            return
        if refusal := self.dlq.take_refusal():
            raise refusal  # the DLQ will never take that record: one clear error, not a loop
        self.aborted_by_us = True
        then = "; committing again shortly" if recover else ""
        print(f"transaction aborted ({reason.str()}){then}", file=sys.stderr)

    def restart_producer(self, error: KafkaError) -> None:
        """Carry on as a restarted consumer would: a new transactional producer, and every assigned
        partition back at its committed offset with the aggregate committed with it. Nothing of the
        lost transaction became visible, so its records are simply processed again."""
        print(
            f"transaction lost ({error.str()}); starting again from the last commit with a new producer",
            file=sys.stderr,
        )
        self.replace_producer(close_old=error.code() != PRODUCER_BLOCKED)
        assignment = self.consumer.assignment()
        self.forget(assignment)
        for tp in self.restore(assignment):
            start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING  # nothing committed yet
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, start))

    def replace_producer(self, close_old: bool = True) -> None:
        """A new transactional producer (a transactional.id of its own). A blocked one is left to
        its thread (close_old=False): close() would block too."""
        fenced = self.producer
        if close_old:
            fenced.purge()  # its records can never be committed; close() would wait to flush them
            with suppress(KafkaException):  # close() still frees the client when its abort is refused
                fenced.close()
        self.dlq.producer = self.new_producer()
        init_transactions(self.producer)

    def commit_before_stopping(self) -> None:
        """The last commit. One that its producer aborted is tried again with a new producer: after
        a leader's death librdkafka can fail every later transaction of the old one ("skipped
        sequence numbers"), and stopping then would leave all since the last commit to the next
        start. The abort changed nothing in memory, so the same outcomes are written again. After
        any other failure (fatal, blocked, an abort refused) the transaction may still land, and
        writing its DLQ copies again could repeat them: the next start reads what landed."""
        for attempt in range(FINAL_COMMIT_TRIES):
            if attempt:
                print("committing again with a new producer", file=sys.stderr)
                self.replace_producer()
            self.commit(recover=False)  # a failure goes through abort(), which sets aborted_by_us
            if not self.positions_to_commit():
                return
            if not self.aborted_by_us:
                break
        print("the last commit failed: the next start processes its records", file=sys.stderr)

    # -- partitions coming and going ----------------------------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        super().on_assign(consumer, partitions)
        # Start at the offsets whose aggregates were restored: state and position from one read.
        self.take(consumer, self.restore(partitions))
        self.match_pause_state(consumer, partitions)

    def restore(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Restore each partition's aggregate from the metadata of its committed offset; returns
        the committed offsets. An offset without one starts the aggregate from zero there."""
        if not partitions:
            return []
        try:
            committed = self.consumer.committed(partitions, timeout=RESTORE_TIMEOUT_S)
        except KafkaException as exc:
            raise UserError(f"cannot read the group's committed offsets: {exc.args[0].str()}") from exc
        for tp in committed:
            key = partition_key(tp)
            aggregate = aggregate_from_metadata(tp.metadata)
            if aggregate is not None:
                self.say(f"Restored {tp.topic} [{tp.partition}]: {aggregate} at offset {tp.offset}\n")
            elif tp.offset >= 0:
                print(
                    f"note: {tp.topic} [{tp.partition}] offset {tp.offset} was committed without an "
                    "aggregate (by a consumer without --exactly-once, or an offset reset): "
                    "counting from zero at that offset",
                    file=sys.stderr,
                )
            self.positions[key] = tp.offset
            self.committed[key] = aggregate or RunningAverage()
            self.counted[key] = copy(self.committed[key])
            self.settled[key] = {}
        return committed

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """No transaction here: a transactional call inside the rebalance callback waits for the
        rebalance, which waits for the callback (seen: 35 s, then a lost producer). What is not
        committed yet (at most COMMIT_INTERVAL_S of work) is dropped: the new owner, or this
        consumer after the rebalance, processes it again from the committed offset."""
        super().on_revoke(consumer, partitions)
        with suppress(KafkaException):  # clear a pause flag librdkafka would keep for a later assignment
            consumer.resume(partitions)
        self.forget(partitions)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Drop what this consumer knew of the partitions, waiting orders and uncommitted outcomes
        included: whoever reads them next starts from the committed offset and aggregate."""
        keys = {partition_key(tp) for tp in partitions}
        self.schedule.drop(keys)
        self.offsets.forget(list(keys))
        for key in keys:
            for by_partition in (self.positions, self.committed, self.settled, self.counted):
                by_partition.pop(key, None)

    def finish(self, clean: bool) -> None:
        self.finished = True
        if clean:
            self.drain(self.policy.worst_case_s() + 1.0)
            self.commit_before_stopping()
        elif self.txn and not self.txn.committed:  # after an error nothing of it may become visible
            txn, self.txn = self.txn, None
            reason = KafkaError(KafkaError._DESTROY, "consumer stopping mid-transaction")
            self.abort(txn, reason, recover=False)
            print("the next start processes its records", file=sys.stderr)
