"""What a share consumer does with each polled batch: decide every record, make the decisions
durable, then answer the broker.

A record is accepted only once the broker holds what it produced: its DLQ copy, or a snapshot of
this consumer's aggregate that counts it (so the group's combined figure in stats.py never misses
an accepted order). A failed try releases the record, after a backoff, for the broker to deliver
again; the delivery count the broker keeps is the try number.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from enum import Enum

from confluent_kafka import (
    AcknowledgeType,
    IllegalStateException,
    KafkaError,
    KafkaException,
    Message,
    ShareConsumer,
    TopicPartition,
)

from kafka_project.cluster import produce
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.retry import RetryPolicy, SimulatedFailures, TemporaryProcessingError
from kafka_project.consumer.state import ConsumerState
from kafka_project.dlq.dlq_producer import REFUSED_FOR_GOOD, DeadLetterPublisher
from kafka_project.dlq.headers import describe
from kafka_project.errors import UserError
from kafka_project.order_codec import OrderCodec, OrderDecodeError
from kafka_project.registry import RegistryUnavailableError

# How long a stopping consumer waits for the broker to acknowledge DLQ copies and its snapshot.
FLUSH_TIMEOUT_S = 30.0


class TriesUsedUp(Exception):
    """Delivered after its last try: that try ended without an answer (its consumer was stopped or
    killed, or held it past its lock). Dead-lettered at once: a record that kills its consumer
    must not be tried until the broker drops it."""


class Outcome(Enum):
    COUNTED = "counted"
    DEAD_LETTERED = "dead-lettered"
    RELEASED = "released"


@dataclass(eq=False)
class Decision:
    msg: Message
    outcome: Outcome
    release_at: float = 0.0  # RELEASED: when its backoff is over
    copy_acked: bool = False  # DEAD_LETTERED: the broker acknowledged its DLQ copy
    counted_as: int = 0  # COUNTED: this consumer's count with it; a snapshot of that count holds it


class ShareProcessor:
    def __init__(
        self,
        consumer: ShareConsumer,
        dlq: DeadLetterPublisher,
        codec: OrderCodec,
        args: argparse.Namespace,
        consumer_id: str,
        lock_duration_s: float,
    ) -> None:
        self.consumer, self.dlq, self.codec = consumer, dlq, codec
        self.failures = SimulatedFailures(args.failure_rate, args.seed, work_s=args.work_time)
        self.policy = RetryPolicy(args.max_attempts, args.retry_backoff)
        self.stats_topic = args.stats_topic
        # A registry outage is not the record's fault: its next delivery waits half a lock, so that
        # 3 deliveries span 30 s of outage (at Kafka's 30 s lock) before the DLQ.
        self.registry_backoff_s = lock_duration_s / 2
        self.aggregate = RunningAverage()
        self.group, self.consumer_id = args.share_group, consumer_id
        self.published_count = 0  # the count in this consumer's latest snapshot the broker holds
        self.next_snapshot_at = 0.0  # when a snapshot may be sent (inf: one is in flight)
        self.lock_s = lock_duration_s
        self.say = (lambda _line: None) if args.quiet else print
        self.verbose = not args.quiet
        self.retries = 0  # failed tries released for another delivery
        self.dead_lettered = 0
        self.errors = 0

    # -- one batch ---------------------------------------------------------------------------
    def handle(self, messages: list[Message], stop: threading.Event, polled_at: float) -> None:
        """Decide every record of the batch (a stop waits for the batch: released untried, a record
        would use up a delivery), within half the lock: a record still untried then is released."""
        decisions, untried = [], 0
        for msg in messages:
            if error := msg.error():
                if error.fatal():
                    raise UserError(f"Kafka share consumer failed: {error.str()}")
                self.errors += 1
                print(f"kafka: {error.str()}", file=sys.stderr)
            elif self.too_late(polled_at) and (msg.delivery_count() or 1) < self.policy.max_attempts:
                decisions.append(Decision(msg, Outcome.RELEASED))
                untried += 1
            else:
                decisions.append(self.decide(msg))
        if untried:
            print(
                f"warning: a batch outlived half the {self.lock_s:g} s lock; {untried} records released "
                "untried (lower max.poll.records in --config, or the time a try takes)",
                file=sys.stderr,
            )
        self.make_durable(decisions, stop, lock_expires_at=polled_at + self.lock_s)
        self.answer(decisions, stop)

    def too_late(self, polled_at: float) -> bool:
        return time.monotonic() - polled_at > self.lock_s / 2

    def decide(self, msg: Message) -> Decision:
        delivery = msg.delivery_count() or 1
        try:
            order = self.codec.decode(msg.value())
        except OrderDecodeError as exc:  # poison: no delivery can fix the bytes
            self.say(f"Poison record at {describe(msg)}: {exc}")
            return self.dead_letter(msg, exc, attempts=0, label=describe(msg))
        except RegistryUnavailableError as exc:  # a failed try: released later, or to the DLQ
            self.say(f"  Delivery {delivery} of {describe(msg)} not decoded: {exc}")
            return self.failed(msg, exc, delivery, label=describe(msg), backoff_s=self.registry_backoff_s)
        if self.verbose:
            print(f"Received order: {order} (delivery {delivery})")
        if delivery > self.policy.max_attempts:
            error = TriesUsedUp(
                f"delivered {delivery} times, {self.policy.max_attempts} tries allowed: "
                "an earlier delivery ended without an answer"
            )
            self.say(f"  {error}")
            return self.dead_letter(msg, error, delivery, label=f"orderId {order.order_id}")
        try:
            self.failures.maybe_fail(order.order_id, delivery)
        except TemporaryProcessingError as exc:
            self.say(f"  Attempt {delivery}/{self.policy.max_attempts} failed: {exc}")
            return self.failed(msg, exc, delivery, label=f"orderId {order.order_id}")
        self.aggregate.add(order.price)
        if self.verbose:
            print(f"✓ Processing successful\n{self.aggregate}\n")
        return Decision(msg, Outcome.COUNTED, counted_as=self.aggregate.count)

    def failed(
        self, msg: Message, error: Exception, delivery: int, label: str, backoff_s: float | None = None
    ) -> Decision:
        if delivery < self.policy.max_attempts:
            self.retries += 1
            wait_s = self.policy.delay_after(delivery) if backoff_s is None else backoff_s
            return Decision(msg, Outcome.RELEASED, release_at=time.monotonic() + wait_s)
        self.say("Permanent failure")
        return self.dead_letter(msg, error, delivery, label)

    def dead_letter(self, msg: Message, error: Exception, attempts: int, label: str) -> Decision:
        decision = Decision(msg, Outcome.DEAD_LETTERED)

        def acked() -> None:
            decision.copy_acked = True
            self.dead_lettered += 1
            self.say(f"Moved to DLQ: {label}\n")

        self.dlq.send(msg, error, attempts, on_acked=acked)
        return decision

    # -- durable, then answered --------------------------------------------------------------
    def make_durable(self, decisions: list[Decision], stop: threading.Event, lock_expires_at: float) -> None:
        """Wait until the broker holds every DLQ copy and a snapshot counting this batch's orders;
        no longer than the records' lock (answers after it are refused: the records went to
        another consumer), and stopping, no longer than FLUSH_TIMEOUT_S."""
        give_up_at = lock_expires_at
        while not all(self.durable(d) for d in decisions) and time.monotonic() < give_up_at:
            if stop.is_set():
                give_up_at = min(give_up_at, time.monotonic() + FLUSH_TIMEOUT_S)
            if self.published_count < self.aggregate.count and time.monotonic() >= self.next_snapshot_at:
                self.publish_snapshot()
            self.dlq.flush(0.2)  # serves the delivery callbacks (a failed DLQ write is sent again)

    def durable(self, decision: Decision) -> bool:
        if decision.outcome is Outcome.DEAD_LETTERED:
            return decision.copy_acked
        return decision.outcome is Outcome.RELEASED or self.published_count >= decision.counted_as

    def publish_snapshot(self) -> None:
        """This consumer's count and total, keyed by consumer: the newest snapshot supersedes the
        others, so a failed one is simply followed by the next, a second later."""
        snapshot = ConsumerState(
            self.group, self.consumer_id, self.aggregate.count, self.aggregate.total_price
        )

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                self.published_count = max(self.published_count, snapshot.count)
                self.next_snapshot_at = 0.0
                return
            if err.code() in REFUSED_FOR_GOOD:
                raise UserError(
                    f"the stats topic {self.stats_topic} refused this consumer's snapshot: {err.str()}"
                )
            print(
                f"kafka: snapshot to {self.stats_topic} failed ({err.str()}); sending again", file=sys.stderr
            )
            self.next_snapshot_at = time.monotonic() + 1.0

        self.next_snapshot_at = float("inf")  # one in flight at a time
        produce(
            self.dlq.producer,
            self.stats_topic,
            key=snapshot.key,
            value=snapshot.to_json(),
            on_delivery=delivered,
        )

    def answer(self, decisions: list[Decision], stop: threading.Event) -> None:
        """Accept what the broker holds, release the failed tries once their backoff is over. A
        record whose DLQ copy or snapshot the broker does not hold is released (its lock has
        expired: the broker refuses that answer), or, when stopping, left for close() to hand back."""
        release_at = max((d.release_at for d in decisions if d.outcome is Outcome.RELEASED), default=0.0)
        if (wait := release_at - time.monotonic()) > 0:
            stop.wait(wait)  # the broker redelivers a released record at once: the backoff is ours
        for decision in decisions:
            if decision.outcome is Outcome.RELEASED:
                self.acknowledge(decision.msg, AcknowledgeType.RELEASE)
            elif self.durable(decision):
                self.acknowledge(decision.msg, AcknowledgeType.ACCEPT)
            elif not stop.is_set():  # the next poll needs every record answered
                self.acknowledge(decision.msg, AcknowledgeType.RELEASE)

    def acknowledge(self, msg: Message, answer: AcknowledgeType) -> None:
        try:
            self.consumer.acknowledge(msg, answer)
        except IllegalStateException as exc:  # e.g. its partition's leader changed since delivery
            self.errors += 1
            print(f"kafka: cannot answer {describe(msg)} ({exc}); it is delivered again", file=sys.stderr)

    def on_acknowledged(self, offsets: dict[TopicPartition, set[int]], error: KafkaException | None) -> None:
        """The broker's answer to acknowledgements: refused ones (their lock had expired) are
        delivered again, to this or another consumer, and counted or dead-lettered again."""
        if error is not None:
            self.errors += 1
            refused = ", ".join(f"{tp.topic} [{tp.partition}] {len(o)} records" for tp, o in offsets.items())
            print(f"kafka: acknowledgements refused ({error}): {refused}; delivered again", file=sys.stderr)

    def summary(self) -> str:
        return (
            f"Summary: processed={self.aggregate.count} dlq={self.dead_lettered} "
            f"retries={self.retries} total={self.aggregate.total_price} avg={self.aggregate.avg}"
        )
