"""What the consumer does with each record: decode, try, retry on a schedule, then count it or
dead-letter it.

`OrderProcessor` holds the logic both delivery modes share; `AtLeastOnceProcessor` commits through
stored offsets. The exactly-once variant lives in exactly_once.py.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from kafka_project.cluster import is_fatal
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.offsets import OffsetTracker, PartitionKey
from kafka_project.consumer.registry_wait import RegistryWait
from kafka_project.consumer.retry import RetryPolicy, SimulatedFailures, TemporaryProcessingError
from kafka_project.consumer.schedule import RetrySchedule, Work, lane_of
from kafka_project.dlq.dlq_producer import DeadLetterPublisher
from kafka_project.dlq.headers import describe, replayed_for
from kafka_project.errors import UserError
from kafka_project.order_codec import MAX_RECORD_BYTES, OrderCodec, OrderDecodeError
from kafka_project.registry import RegistryUnavailableError

FLUSH_TIMEOUT_S = 30.0
# Full for a moment (most retry waits), the consumer just stops polling; full for this long, it
# pauses its partitions, so that polling serves rebalances again without taking records.
PAUSE_WHEN_FULL_FOR_S = 1.0
# Answers to a join that no retry changes: the consumer would try again every few seconds forever.
JOIN_REFUSED = {KafkaError.INVALID_SESSION_TIMEOUT, KafkaError.INCONSISTENT_GROUP_PROTOCOL}
# How long a consumer may wait for an assignment before --idle-timeout counts: a few heartbeats,
# and a rejoin after its session expired.
JOIN_GRACE_S = 30.0


def partition_key(tp: TopicPartition) -> PartitionKey:
    return tp.topic, tp.partition


def position_of(msg: Message) -> tuple[PartitionKey, int]:
    """A consumed record's partition and offset (never None on a consumed record; this runs for
    every record, so it does not check)."""
    return (msg.topic(), msg.partition()), msg.offset()  # type: ignore[return-value]


class LineNaming:
    """Which order a line of the per-order output is about. The seed's output names an order on
    its `Received order:` line only; with retries interleaved, a line about an order after lines
    about another one names it: ` (orderId X)`."""

    def __init__(self) -> None:
        self.last = ""  # the orderId the last line was about

    def received(self, order_id: str) -> None:
        self.last = order_id

    def about(self, order_id: str) -> str:
        """'' when the previous line was about this order, else its name for the line."""
        if order_id == self.last:
            return ""
        self.last = order_id
        return f" (orderId {order_id})"

    def forget(self) -> None:
        """The last line was about no order in particular (poison, a DLQ move)."""
        self.last = ""


def passed_over(count: int) -> str:
    """The summary's last field, there only when a replayed record was passed over."""
    return f" passed_over={count}" if count else ""


class OrderProcessor:
    """Decode, try, retry, count or dead-letter: the part of the consumer both delivery modes share.

    A failed try never blocks the partition: the order waits in the schedule while the consumer
    keeps polling, and only later orders with the same key wait behind it (per-key order)."""

    def __init__(
        self, consumer: Consumer, dlq: DeadLetterPublisher, codec: OrderCodec, args: argparse.Namespace
    ) -> None:
        self.consumer = consumer
        self.dlq = dlq
        self.codec = codec
        self.failures = SimulatedFailures(args.failure_rate, args.seed, work_s=args.work_time)
        self.policy = RetryPolicy(args.max_attempts, args.retry_backoff)
        self.schedule = RetrySchedule()
        self.registry_wait = RegistryWait()
        self.max_in_flight: int = args.max_in_flight
        self.max_in_flight_bytes: int = args.max_in_flight_bytes
        self.full_since: float | None = None  # when the consumer first became full (full())
        self.paused = False  # the assigned partitions are paused: full for PAUSE_WHEN_FULL_FOR_S
        # A record is done when its order is counted or its DLQ copy acknowledged; the commit
        # position of a partition is its lowest record not done.
        self.offsets = OffsetTracker()
        # Quiet runs skip formatting the per-order lines altogether: it costs more than decoding.
        self.verbose = not args.quiet
        self.say: Callable[[str], None] = print if self.verbose else (lambda _line: None)
        self.names = LineNaming()
        self.retries = 0
        self.dead_lettered = 0
        self.passed_over = 0  # replayed for another group: done, not counted
        self.errors = 0  # consume errors and aborted transactions (client errors are counted in cluster)
        # Called after every try, e.g. to refresh the live view in the middle of a slow batch.
        self.after_each_record: Callable[[], None] = lambda: None
        # The partitions this consumer owns now; a record polled before its partition was revoked
        # (consume() can run on_revoke after poll() returned it) belongs to the new owner.
        self.assigned: set[PartitionKey] = set()
        # Between a revoke and the next assignment the consumer is (re)joining the group, which is
        # not idleness; once assigned, even nothing, --idle-timeout counts (see joining()).
        self.joined = False
        self.joining_since = time.monotonic()
        self.rebalances = 0  # rebalance callbacks run so far
        # Partitions revoked or assigned since poll_batch last cleared it: a record polled before
        # its partition moved belongs to its new owner, or comes again from where it starts.
        self.moved: set[PartitionKey] = set()
        self.finished = False  # finish() ran: close()'s revoke has nothing left to wait for
        # Cooperative protocols add and take away partitions one rebalance at a time, eager ones
        # replace the whole assignment; either way the callbacks see only the partitions that move.
        self.incremental = args.group_protocol != "classic"

    # -- the per-record logic -------------------------------------------------------------
    def receive(self, msg: Message, partition: PartitionKey, offset: int) -> None:
        """A record just polled: poison goes to the DLQ, an order gets its first try now, or
        after the orders of its key that came before it."""
        if (owner := replayed_for(msg)) is not None and owner != self.dlq.group_id:
            self.names.forget()
            self.say(f"Passed over {describe(msg)}: replayed for group {owner}, counted here already")
            self.passed_over += 1
            self.skip(partition, offset)
            return
        try:
            order = self.codec.decode_record(msg)
        except OrderDecodeError as exc:  # poison: retrying cannot fix bytes
            self.names.forget()
            self.say(f"Poison record at {describe(msg)}: {exc}")
            self.dead_letter(msg, exc, attempts=0, label=describe(msg))
            return
        except RegistryUnavailableError as exc:  # not poison: read again once the registry answers
            self.registry_wait.hold(self.consumer, partition, offset, describe(msg), exc)
            return
        if self.registry_wait.resumed:
            self.registry_wait.decoded(partition)
        if self.verbose:
            self.names.received(order.order_id)
            print(f"Received order: {order}")
        work = Work(msg, order, partition, offset, lane_of(msg, partition, offset))
        if self.schedule.busy(work.lane):
            self.offsets.held(partition, offset)
            self.schedule.add(work, time.monotonic())  # tried once the earlier ones are finished
        else:
            self.attempt(work)

    def attempt(self, work: Work) -> None:
        """One try; after a failure the order is due again a backoff later, or goes to the DLQ."""
        work.tries += 1
        try:
            self.try_once(work)
        except TemporaryProcessingError as exc:
            named = self.names.about(work.order.order_id)
            self.say(f"  Attempt {work.tries}/{self.policy.max_attempts} failed{named}: {exc}")
            if work.tries < self.policy.max_attempts:
                self.retries += 1
                due_at = time.monotonic() + self.policy.delay_after(work.tries)
                if self.schedule.busy(work.lane):  # it is the head of its lane
                    self.schedule.try_again(work, due_at)
                else:
                    self.offsets.held(work.partition, work.offset)
                    self.schedule.add(work, due_at)
                return
            self.say(f"Permanent failure{self.names.about(work.order.order_id)}")
            self.schedule.finished(work, time.monotonic())
            self.dead_letter(work.msg, exc, work.tries, label=f"orderId {work.order.order_id}")
            return
        self.schedule.finished(work, time.monotonic())
        self.count(work)
        if self.verbose:
            named = self.names.about(work.order.order_id)
            print(f"✓ Processing successful{named}\n{self.running_average()}\n")

    def try_once(self, work: Work) -> None:
        """The processing step that may fail transiently (a payment or stock call in a real service)."""
        self.failures.maybe_fail(work.order.order_id, work.tries)

    def process(self, messages: list[Message], stop: threading.Event) -> None:
        for msg in messages:
            if stop.is_set():
                return  # the rest are not received, so they are delivered again next time
            if error := msg.error():
                if is_fatal(error):
                    raise UserError(f"Kafka consumer failed: {error.str()}")
                if error.code() in JOIN_REFUSED:
                    raise UserError(f"the group refused this consumer: {error.str()} (see --config)")
                self.errors += 1
                print(f"kafka: {error.str()}", file=sys.stderr)
                continue
            partition, offset = position_of(msg)
            if partition not in self.assigned:
                continue  # revoked since it was polled: its new owner reads it from the committed offset
            if partition in self.registry_wait.waiting:  # behind a record waiting for the registry
                self.registry_wait.skipped(self.consumer, partition, offset)
                continue
            self.receive(msg, partition, offset)
            self.after_each_record()
            if self.schedule.size:
                self.run_due(stop)  # retries due by now go first: a backoff of 0 retries at once

    def run_due(self, stop: threading.Event) -> None:
        """The tries whose time has come."""
        while not stop.is_set() and (work := self.schedule.pop_due(time.monotonic())) is not None:
            self.attempt(work)
            self.after_each_record()

    def drain(self, timeout_s: float) -> None:
        """Give the orders in progress up to timeout_s to finish; the rest stay not done (their
        records are delivered again after a restart)."""
        deadline = time.monotonic() + timeout_s
        never = threading.Event()
        while self.schedule.size and (wait := self.schedule.seconds_to_next(time.monotonic())) is not None:
            if time.monotonic() + wait > deadline:
                return
            time.sleep(wait)
            self.run_due(never)
            self.dlq.poll()

    # -- flow control --------------------------------------------------------------------
    def room(self) -> int:
        """How many more records may be taken now: orders in progress stay within max_in_flight,
        and their values within max_in_flight_bytes plus one record (as many records as could all
        be of the largest size an order has, and one more)."""
        bytes_left = self.max_in_flight_bytes - self.schedule.bytes
        if self.paused or bytes_left <= 0:
            return 0
        return max(0, min(self.max_in_flight - self.schedule.size, bytes_left // MAX_RECORD_BYTES + 1))

    def full(self) -> bool:
        return self.schedule.size >= self.max_in_flight or self.schedule.bytes >= self.max_in_flight_bytes

    def holding_back(self) -> bool:
        """Full, not paused yet: wait for the next try instead of polling."""
        return not self.paused and self.full()

    def pause_or_resume(self) -> None:
        """Pause the partitions once max_in_flight orders have been in progress for
        PAUSE_WHEN_FULL_FOR_S; resume at half that. Not at once: librdkafka drops a paused
        partition's prefetched records, and refetches them only when its broker thread next wakes,
        up to a second after resume() (one order at a time ran at 6 orders/s that way, not 22)."""
        now = time.monotonic()
        if not self.full():
            self.full_since = None
        elif self.full_since is None:
            self.full_since = now
        if not self.paused:
            self.registry_wait.resume_due(self.consumer)
        # The byte budget pauses at once: librdkafka's prefetch limit counts record values only, and
        # in a second it fetched 400 MB of 63 KB records whose headers hold the bytes.
        bytes_full = self.schedule.bytes >= self.max_in_flight_bytes
        if (
            not self.paused
            and self.full_since is not None
            and (bytes_full or now - self.full_since >= PAUSE_WHEN_FULL_FOR_S)
        ):
            self.consumer.pause(self.consumer.assignment())
            self.paused = True
        elif (
            self.paused
            and self.schedule.size <= self.max_in_flight // 2
            and self.schedule.bytes <= self.max_in_flight_bytes // 2
        ):
            # Not the partitions waiting for the registry: they resume when their backoff is over.
            waiting = self.registry_wait.waiting
            self.consumer.resume(
                [tp for tp in self.consumer.assignment() if partition_key(tp) not in waiting]
            )
            self.paused = False

    def poll_timeout(self, longest_s: float) -> float:
        """Poll no longer than until the next try is due."""
        wait = self.schedule.seconds_to_next(time.monotonic())
        return longest_s if wait is None else min(longest_s, wait)

    def summary(self) -> str:
        average = self.running_average()
        return (
            f"Summary: processed={average.count} dlq={self.dead_lettered} "
            f"retries={self.retries} total={average.total_price} avg={average.avg}"
            f"{passed_over(self.passed_over)}"
        )

    # -- what differs between delivery modes ------------------------------------------------
    def count(self, work: Work) -> None:
        raise NotImplementedError

    def dead_letter(self, msg: Message, error: Exception, attempts: int, label: str) -> None:
        raise NotImplementedError

    def skip(self, partition: PartitionKey, offset: int) -> None:
        """A record done without counting it: replayed from the DLQ for another group."""
        raise NotImplementedError

    def running_average(self) -> RunningAverage:
        raise NotImplementedError

    def checkpoint(self, quiet: bool = False) -> None:
        """After each poll (quiet: it brought nothing): make what is done committable."""

    def joining(self) -> bool:
        """(Re)joining the group: not idleness, for JOIN_GRACE_S at most. A rebalance may end in no
        callback at all: an empty assignment under the incremental protocols (KIP-848), and no
        join under the classic one while the subscribed topic is gone (deleted under it)."""
        return not self.joined and time.monotonic() - self.joining_since < JOIN_GRACE_S

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.joined = True
        self.rebalances += 1
        self.moved.update(partition_key(tp) for tp in partitions)
        self.assigned.update(partition_key(tp) for tp in partitions)

    def take(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start fetching newly assigned partitions (at the offsets they carry, if any)."""
        (consumer.incremental_assign if self.incremental else consumer.assign)(partitions)

    def match_pause_state(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Called once the partitions are assigned: paused while the consumer is full, resumed
        otherwise. librdkafka keeps a partition's pause flag across a revoke and a later
        assignment, so a partition paused before it was revoked would stay paused for good."""
        if partitions:
            (consumer.pause if self.paused else consumer.resume)(partitions)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.incremental:
            self.joined = True  # a cooperative revoke is not followed by a join
        else:
            self.rejoin()  # an eager one is: its grace starts now, not at the consumer's start
        self.rebalances += 1
        revoked = {partition_key(tp) for tp in partitions}
        self.moved |= revoked
        self.assigned.difference_update(revoked)
        # Orders still waiting are not done: dropped uncommitted, the new owner gets them again.
        self.schedule.drop(revoked)
        self.offsets.forget(list(revoked))
        self.registry_wait.forget(revoked)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group went on without this consumer (its session expired, e.g. while it was
        stopped): the partitions are someone else's already. Dropped as on a revoke, and the
        consumer joins again."""
        self.on_revoke(consumer, partitions)
        self.rejoin()

    def rejoin(self) -> None:
        self.joined = False
        self.joining_since = time.monotonic()

    def finish(self, clean: bool) -> None:
        """Before the consumer closes: nothing done may be left uncommittable."""


class AtLeastOnceProcessor(OrderProcessor):
    """An offset is stored once every record below it is done (its order counted or its DLQ copy
    acknowledged); auto-commit and close() commit stored offsets, never merely polled ones."""

    def __init__(
        self, consumer: Consumer, dlq: DeadLetterPublisher, codec: OrderCodec, args: argparse.Namespace
    ) -> None:
        super().__init__(consumer, dlq, codec, args)
        self.aggregate = RunningAverage()
        self.stored: dict[PartitionKey, int] = {}

    def count(self, work: Work) -> None:
        self.aggregate.add(work.order.price)
        self.offsets.done(work.partition, work.offset)

    def skip(self, partition: PartitionKey, offset: int) -> None:
        self.offsets.done(partition, offset)

    def running_average(self) -> RunningAverage:
        return self.aggregate

    def dead_letter(self, msg: Message, error: Exception, attempts: int, label: str) -> None:
        key, offset = position_of(msg)
        self.offsets.held(key, offset)  # until the broker acknowledges the copy

        def acked() -> None:
            self.offsets.released(key, offset)
            self.dead_lettered += 1
            self.names.forget()
            self.say(f"Moved to DLQ: {label}\n")

        self.dlq.send(msg, error, attempts, on_acked=acked)

    def checkpoint(self, quiet: bool = False) -> None:
        for key in self.assigned:
            position = self.offsets.commit_position(key)
            if position is not None and position != self.stored.get(key):
                self.consumer.store_offsets(offsets=[TopicPartition(key[0], key[1], position)])
                self.stored[key] = position

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        super().on_assign(consumer, partitions)
        self.take(consumer, partitions)  # now, so that pausing them below takes effect
        self.match_pause_state(consumer, partitions)

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions move to another consumer: finish their DLQ writes and commit."""
        self.dlq.flush(0 if self.finished else FLUSH_TIMEOUT_S)
        self.checkpoint()
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                print(f"kafka: commit on revoke failed: {exc.args[0].str()}", file=sys.stderr)
        super().on_revoke(consumer, partitions)
        for tp in partitions:
            self.stored.pop(partition_key(tp), None)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Unlike a revoke, nothing can be committed for lost partitions any more (librdkafka
        refuses with _ASSIGNMENT_LOST): no DLQ flush and commit to wait for before rejoining."""
        OrderProcessor.on_revoke(self, consumer, partitions)
        for tp in partitions:
            self.stored.pop(partition_key(tp), None)
        self.rejoin()

    def finish(self, clean: bool) -> None:
        # DLQ copies acknowledged first (they release their offsets); close() then commits them.
        self.finished = True
        if clean:
            self.drain(self.policy.worst_case_s() + 1.0)
        unacked = self.dlq.flush(FLUSH_TIMEOUT_S)
        self.checkpoint()
        if unacked:
            print(
                f"warning: {unacked} DLQ copies unacknowledged; their offsets stay uncommitted",
                file=sys.stderr,
            )
