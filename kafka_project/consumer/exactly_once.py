"""Exactly-once processing: DLQ copies, aggregate snapshots and consumer offsets in one Kafka transaction.

Per transaction (the records of about MAX_TRANSACTION_S, or fewer when the topic goes quiet):
  begin -> DLQ records + one `orders-stats` snapshot per partition touched
        -> send_offsets_to_transaction(next offsets, each carrying its partition's aggregate) -> commit
Either all of it becomes visible to read_committed readers, or none of it: then the in-memory
aggregates are rolled back and the partitions rewound, and the same records are processed again.
On every assignment each partition's aggregate is restored from the metadata of its committed
offset (one committed() call, whatever the history), and consumption starts at that offset.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from copy import copy
from dataclasses import dataclass, field

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from kafka_project.cluster import client_config, produce
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.offsets import PartitionKey
from kafka_project.consumer.processor import OrderProcessor, offset_of, partition_key
from kafka_project.consumer.state import (
    PartitionState,
    aggregate_from_metadata,
    aggregate_to_metadata,
    combined,
)
from kafka_project.dlq.dlq_producer import DLQ_MAX_MESSAGE_BYTES, DeadLetterPublisher
from kafka_project.errors import UserError
from kafka_project.order_codec import Order, OrderCodec

MAX_TRANSACTION_S = 1.0  # bounds the work an abort repeats, far below transaction.timeout.ms
TRANSACTION_TIMEOUT_MS = 10000
API_TIMEOUT_S = 30.0  # for one transactional call, retries included
RESTORE_TIMEOUT_S = 30.0


def transactional_producer_config(bootstrap_servers: str, transactional_id: str) -> dict:
    # A unique transactional.id per process is safe: since KIP-447 zombies are fenced through the
    # consumer group generation passed to send_offsets_to_transaction.
    # A short transaction.timeout.ms: the open transaction of a crashed consumer holds back every
    # read_committed reader of the DLQ and stats topics until the broker aborts it.
    return client_config(
        bootstrap_servers,
        **{
            "transactional.id": transactional_id,
            "linger.ms": 5,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "message.max.bytes": DLQ_MAX_MESSAGE_BYTES,
        },
    )


@dataclass
class Transaction:
    started_at: float = field(default_factory=time.monotonic)
    # The broker's transaction timer starts with the first record written in it (a DLQ copy).
    first_write_at: float | None = None
    first_offsets: dict[PartitionKey, int] = field(default_factory=dict)  # where to rewind on abort
    next_offsets: dict[PartitionKey, int] = field(default_factory=dict)  # what to commit
    saved_aggregates: dict[PartitionKey, RunningAverage] = field(default_factory=dict)
    saved_retries: int = 0
    dead_letter_labels: list[str] = field(default_factory=list)
    begun: bool = False  # begin_transaction() succeeded


def retry_retriable(call: Callable[[], None], timeout_s: float = API_TIMEOUT_S) -> None:
    """Transactional API calls may fail with a retriable error; the documented answer is to call
    again. With a growing pause between calls, and not past timeout_s: then the error is raised."""
    deadline = time.monotonic() + timeout_s
    pause = 0.05
    while True:
        try:
            with said_if_blocked(timeout_s + 5):
                call()
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 1.0)


@contextmanager
def said_if_blocked(after_s: float) -> Iterator[None]:
    """One line on stderr if a transactional call has not returned after after_s: while the group
    coordinator is down, librdkafka can block in it for the whole outage, ignoring its timeout
    (and Python's Ctrl-C handling, which only a third Ctrl-C gets through)."""
    timer = threading.Timer(
        after_s,
        lambda: print(
            f"kafka: a transaction call has been waiting {after_s:.0f} s for the broker; still "
            "waiting (Ctrl-C three times quits at once)",
            file=sys.stderr,
        ),
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


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
        self.aggregates: dict[PartitionKey, RunningAverage] = {}
        self.txn: Transaction | None = None
        self.rewound: set[PartitionKey] = set()  # partitions an abort rewound during the current batch
        init_transactions(self.producer)

    @property
    def producer(self) -> Producer:
        """The transactional producer: the one the DLQ publisher writes with."""
        return self.dlq.producer

    # -- processing inside a transaction -----------------------------------------------------
    def process(self, messages: list[Message], stop: threading.Event) -> None:
        self.rewound.clear()
        super().process(messages, stop)
        # A transaction spans polls while records keep coming; a quiet poll or a stop commits it.
        if self.txn and (not messages or stop.is_set()):
            self.commit()

    def handle(self, msg: Message) -> None:
        key = partition_key(msg)
        if self.txn and not self.room_for_one_more_record(self.txn):
            self.commit()  # if it aborts, it rewinds: check that below
        if key in self.rewound:
            return  # an abort in this batch rewound the partition: the record comes again
        if self.txn is None:
            self.txn = Transaction(saved_retries=self.retries)
        if key not in self.txn.first_offsets:
            self.txn.first_offsets[key] = offset_of(msg)
            self.txn.saved_aggregates[key] = copy(self.aggregates.setdefault(key, RunningAverage()))
        try:
            if not self.txn.begun:
                self.producer.begin_transaction()
                self.txn.begun = True
            super().handle(msg)
        except KafkaException as exc:  # e.g. produce() refused: the transaction hit an abortable error
            txn, self.txn = self.txn, None
            self.abort(txn, exc.args[0])
            return
        self.txn.next_offsets[key] = offset_of(msg) + 1
        if time.monotonic() - self.txn.started_at > MAX_TRANSACTION_S:
            self.commit()

    def room_for_one_more_record(self, txn: Transaction) -> bool:
        """Whether the next record, retried as long as the policy allows, still fits in this
        transaction's MAX_TRANSACTION_S on the broker: no transaction may outlive its timeout."""
        if txn.first_write_at is None:
            return True
        return time.monotonic() - txn.first_write_at + self.policy.worst_case_s() <= MAX_TRANSACTION_S

    def count(self, msg: Message, order: Order) -> None:
        self.aggregates[partition_key(msg)].add(order.price)

    def dead_letter(self, msg: Message, error: Exception, attempts: int, label: str) -> None:
        assert self.txn is not None  # handle() opened it
        if self.txn.first_write_at is None:
            self.txn.first_write_at = time.monotonic()
        self.dlq.send(msg, error, attempts, on_acked=lambda: None)  # acknowledged by the commit
        self.txn.dead_letter_labels.append(label)

    def running_average(self) -> RunningAverage:
        return combined(list(self.aggregates.values()))

    def commit(self) -> None:
        txn, self.txn = self.txn, None
        assert txn is not None
        offsets = []
        try:
            for (topic, partition), next_offset in txn.next_offsets.items():
                aggregate = self.aggregates[(topic, partition)]
                offsets.append(
                    TopicPartition(topic, partition, next_offset, aggregate_to_metadata(aggregate))
                )
                state = PartitionState(
                    self.group_id, topic, partition, aggregate.count, aggregate.total_price, next_offset
                )
                produce(self.producer, self.stats_topic, key=state.key, value=state.to_json())
            retry_retriable(
                lambda: self.producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), API_TIMEOUT_S
                )
            )
            retry_retriable(lambda: self.producer.commit_transaction(API_TIMEOUT_S))
        except KafkaException as exc:
            self.abort(txn, exc.args[0])
            return
        self.dead_lettered += len(txn.dead_letter_labels)
        for label in txn.dead_letter_labels:
            self.say(f"Moved to DLQ: {label}\n")

    def abort(self, txn: Transaction, reason: KafkaError, recover: bool = True) -> None:
        """Undo the transaction's effects in memory and rewind, so its records are processed again.

        Any error inside a transaction lands here. A fatal one (the producer was fenced, e.g.
        because the broker aborted a transaction that outlived transaction.timeout.ms while it was
        down) cannot be aborted by this producer: then start over with a new one (recover=True).
        """
        self.retries = txn.saved_retries
        self.errors += 1
        try:
            if reason.fatal():
                raise KafkaException(reason)
            if txn.begun:
                retry_retriable(lambda: self.producer.abort_transaction(API_TIMEOUT_S))
        except KafkaException as exc:
            if not exc.args[0].fatal():
                raise UserError(
                    f"transaction failed ({reason.str()}) and could not be aborted: {exc}"
                ) from exc
            if recover:
                self.restart_producer(exc.args[0])
            return
        self.rewound.update(txn.first_offsets)
        for key, saved in txn.saved_aggregates.items():
            self.aggregates[key] = saved
            try:
                self.consumer.seek(TopicPartition(key[0], key[1], txn.first_offsets[key]))
            except KafkaException as exc:
                if key in self.assigned:  # still ours but not rewound: stop rather than skip records
                    raise UserError(
                        f"cannot rewind {key[0]} [{key[1]}] after an aborted transaction "
                        f"({exc.args[0].str()}); nothing past its last commit was committed: restart"
                    ) from exc
                self.aggregates.pop(key)  # no longer ours: its new owner restores the committed state
        if refusal := self.dlq.take_refusal():
            raise refusal  # the DLQ will never take that record: one clear error, not a loop
        then = "reprocessing from the last commit" if recover else "the next start processes its records"
        print(f"transaction aborted ({reason.str()}); {then}", file=sys.stderr)

    def restart_producer(self, error: KafkaError) -> None:
        """Carry on as a restarted consumer would: a new transactional producer, and every assigned
        partition back at its committed offset with the aggregate committed with it. Nothing of the
        lost transaction became visible, so its records are simply processed again."""
        print(
            f"transaction lost ({error.str()}); starting again from the last commit with a new producer",
            file=sys.stderr,
        )
        fenced = self.producer
        fenced.purge()  # its records can never be committed; close() would wait to flush them
        with suppress(KafkaException):  # close() still frees the client when its abort is refused
            fenced.close()
        self.dlq.producer = self.new_producer()
        init_transactions(self.producer)
        self.aggregates.clear()
        for tp in self.restore(self.consumer.assignment()):
            start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING  # nothing committed yet
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, start))
            self.rewound.add(partition_key(tp))

    # -- partitions coming and going ----------------------------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        super().on_assign(consumer, partitions)
        # Start at the offsets whose aggregates were restored: state and position from one read.
        consumer.assign(self.restore(partitions))

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
            self.aggregates[key] = aggregate or RunningAverage()
        return committed

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.txn:  # commit while the partitions, and the group generation, are still ours
            self.commit()
        super().on_revoke(consumer, partitions)
        for tp in partitions:
            self.aggregates.pop(partition_key(tp), None)

    def finish(self, clean: bool) -> None:
        if self.txn and clean:
            self.commit()
        elif self.txn:  # after an error nothing of the open transaction may become visible
            txn, self.txn = self.txn, None  # close() runs on_revoke next: nothing left to commit there
            reason = KafkaError(KafkaError._DESTROY, "consumer stopping mid-transaction")
            self.abort(txn, reason, recover=False)
