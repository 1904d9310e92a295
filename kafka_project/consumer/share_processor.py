"""What a share consumer does with each polled batch: decide every record, make the decisions
durable, then answer the broker.

An order gets its --max-attempts tries within one delivery, spaced by --retry-backoff, so the
broker's delivery count counts deliveries, not tries: a delivery cut short (its consumer died,
stopped, or held it past its lock) costs the order no try, as its next delivery tries it afresh.
Only the broker's last delivery (share.delivery.count.limit) is not tried: the broker archives a
record whose last delivery ends unanswered, so that one goes to the DLQ at once.

A record is accepted only once the broker holds what it produced: its DLQ copy, or a snapshot of
this consumer's aggregate that counts it (so the group's combined figure in stats.py never misses
an accepted order).
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

from kafka_project.cluster import is_fatal, produce
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.processor import LineNaming, passed_over
from kafka_project.consumer.retry import RetryPolicy, SimulatedFailures, TemporaryProcessingError
from kafka_project.consumer.share_group import DELIVERY_LIMIT, ShareGroupLimits
from kafka_project.consumer.state import ConsumerState
from kafka_project.dlq.dlq_producer import REFUSED_FOR_GOOD, DeadLetterPublisher
from kafka_project.dlq.headers import describe, replayed_for
from kafka_project.errors import UserError
from kafka_project.order_codec import Order, OrderCodec, OrderDecodeError
from kafka_project.registry import RegistryUnavailableError

# How long a stopping consumer waits for the broker to acknowledge DLQ copies and its snapshot.
FLUSH_TIMEOUT_S = 30.0


class TriesUsedUp(Exception):
    """Delivered for the last time the group allows, and no delivery before it ended with an answer
    (each consumer that held it died, stopped, or held it past its lock). Dead-lettered untried:
    if this delivery also ended unanswered, the broker would archive the record, and a record that
    kills every consumer that takes it would be lost."""


class Outcome(Enum):
    TRYING = "trying"  # an order with tries left, waiting for its next one
    COUNTED = "counted"
    DEAD_LETTERED = "dead-lettered"
    RELEASED = "released"
    PASSED_OVER = "passed over"  # replayed from the DLQ for another group: accepted, not counted


@dataclass(eq=False)
class Decision:
    msg: Message
    outcome: Outcome = Outcome.TRYING
    order: Order | None = None  # TRYING: the decoded order
    tries: int = 0  # TRYING: its failed tries in this delivery
    next_try_at: float = 0.0  # TRYING: when its backoff is over
    release_at: float = 0.0  # RELEASED: when to hand it back
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
        limits: ShareGroupLimits,
    ) -> None:
        self.consumer, self.dlq, self.codec = consumer, dlq, codec
        self.failures = SimulatedFailures(args.failure_rate, args.seed, work_s=args.work_time)
        self.policy = RetryPolicy(args.max_attempts, args.retry_backoff)
        self.stats_topic = args.stats_topic
        # A registry outage is not the record's fault: its next delivery waits half a lock, so that
        # the deliveries before the last two span 45 s of outage (at Kafka's 5 deliveries, 30 s lock).
        self.registry_backoff_s = limits.lock_duration_s / 2
        self.delivery_limit = limits.delivery_limit
        self.aggregate = RunningAverage()
        self.group, self.consumer_id = args.share_group, consumer_id
        self.published_count = 0  # the count in this consumer's latest snapshot the broker holds
        self.next_snapshot_at = 0.0  # when a snapshot may be sent (inf: one is in flight)
        self.lock_s = limits.lock_duration_s
        self.say = (lambda _line: None) if args.quiet else print
        self.verbose = not args.quiet
        self.names = LineNaming()
        self.retries = 0  # failed tries released for another delivery
        self.dead_lettered = 0
        self.passed_over = 0  # replayed for another group: done, not counted
        self.errors = 0

    # -- one batch ---------------------------------------------------------------------------
    def handle(self, messages: list[Message], stop: threading.Event, polled_at: float) -> None:
        """Decide every record of the batch within half the lock (a stop waits for the batch:
        released undecided, a record would use up a delivery); a record untried then is released,
        one at its last delivery dead-lettered."""
        decisions, untried = [], 0
        decide_by = polled_at + self.lock_s / 2
        for msg in messages:
            if error := msg.error():
                if is_fatal(error):
                    raise UserError(f"Kafka share consumer failed: {error.str()}")
                self.errors += 1
                print(f"kafka: {error.str()}", file=sys.stderr)
            elif time.monotonic() > decide_by and self.delivery(msg) < self.delivery_limit:
                decisions.append(Decision(msg, Outcome.RELEASED))
                untried += 1
            else:
                decisions.append(self.decide(msg))
        untried += self.finish_tries(decisions, decide_by)
        if untried:
            print(
                f"warning: a batch outlived half the {self.lock_s:g} s lock; {untried} records released "
                "before their tries were done (lower max.poll.records in --config, or the time a try takes)",
                file=sys.stderr,
            )
        self.make_durable(decisions, stop, lock_expires_at=polled_at + self.lock_s)
        self.answer(decisions, stop)

    @staticmethod
    def delivery(msg: Message) -> int:
        return msg.delivery_count() or 1

    def decide(self, msg: Message) -> Decision:
        decision, delivery = Decision(msg), self.delivery(msg)
        if (owner := replayed_for(msg)) is not None and owner != self.group:
            self.names.forget()
            self.say(f"Passed over {describe(msg)}: replayed for group {owner}, counted here already")
            decision.outcome = Outcome.PASSED_OVER  # durable at once (counted_as 0): accepted
            self.passed_over += 1
            return decision
        try:
            decision.order = self.codec.decode_record(msg)
        except OrderDecodeError as exc:  # poison: no delivery can fix the bytes
            self.names.forget()
            self.say(f"Poison record at {describe(msg)}: {exc}")
            self.dead_letter(decision, exc, attempts=0, label=describe(msg))
            return decision
        except RegistryUnavailableError as exc:  # the next delivery, half a lock later, may decode it
            self.say(f"  Delivery {delivery} of {describe(msg)} not decoded: {exc}")
            if delivery < self.delivery_limit - 1:  # the last two: one cut short, one for the DLQ
                decision.outcome = Outcome.RELEASED
                decision.release_at = time.monotonic() + self.registry_backoff_s
            else:
                self.dead_letter(decision, exc, attempts=delivery, label=describe(msg))
            return decision
        if self.verbose:
            self.names.received(decision.order.order_id)
            print(f"Received order: {decision.order} (delivery {delivery})")
        if delivery >= self.delivery_limit:
            error = TriesUsedUp(
                f"delivery {delivery}, the last the group allows ({DELIVERY_LIMIT}); "
                "no delivery before it was answered: not tried, the broker would drop it"
            )
            self.say(f"  {error}{self.names.about(decision.order.order_id)}")
            self.dead_letter(decision, error, attempts=0, label=f"orderId {decision.order.order_id}")
            return decision
        self.try_order(decision)
        return decision

    def try_order(self, decision: Decision) -> None:
        """One try: counted, or failed with tries left (tried again after its backoff), or failed
        for the last time (to the DLQ)."""
        assert decision.order is not None
        order, attempt = decision.order, decision.tries + 1
        try:
            self.failures.maybe_fail(order.order_id, attempt)
        except TemporaryProcessingError as exc:
            named = self.names.about(order.order_id)
            self.say(f"  Attempt {attempt}/{self.policy.max_attempts} failed{named}: {exc}")
            decision.tries = attempt
            if attempt < self.policy.max_attempts:
                self.retries += 1
                decision.next_try_at = time.monotonic() + self.policy.delay_after(attempt)
            else:
                self.say(f"Permanent failure{self.names.about(order.order_id)}")
                self.dead_letter(decision, exc, attempt, label=f"orderId {order.order_id}")
            return
        self.aggregate.add(order.price)
        if self.verbose:
            print(f"✓ Processing successful{self.names.about(order.order_id)}\n{self.aggregate}\n")
        decision.outcome, decision.counted_as = Outcome.COUNTED, self.aggregate.count

    def finish_tries(self, decisions: list[Decision], decide_by: float) -> int:
        """Try each failed order again once its backoff is over, until every order is decided; one
        whose next try would come after decide_by is released (its next delivery tries it from the
        first try again). Returns how many were released."""
        trying = [d for d in decisions if d.outcome is Outcome.TRYING]
        while trying:
            decision = min(trying, key=lambda d: d.next_try_at)
            if decision.next_try_at > decide_by:
                break
            time.sleep(max(0.0, decision.next_try_at - time.monotonic()))  # a stop waits too
            self.try_order(decision)
            trying = [d for d in trying if d.outcome is Outcome.TRYING]
        for decision in trying:
            decision.outcome = Outcome.RELEASED
        return len(trying)

    def dead_letter(self, decision: Decision, error: Exception, attempts: int, label: str) -> None:
        decision.outcome = Outcome.DEAD_LETTERED

        def acked() -> None:
            decision.copy_acked = True
            self.dead_lettered += 1
            self.names.forget()
            self.say(f"Moved to DLQ: {label}\n")

        self.dlq.send(decision.msg, error, attempts, on_acked=acked)

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
        """Accept what the broker holds, release the rest (after the registry's backoff, when it
        did not answer). A record whose DLQ copy or snapshot the broker does not hold is released
        (its lock has expired: the broker refuses that answer), or, when stopping, left for close()
        to hand back."""
        release_at = max((d.release_at for d in decisions if d.outcome is Outcome.RELEASED), default=0.0)
        if (wait := release_at - time.monotonic()) > 0:
            stop.wait(wait)  # the broker delivers a released record again at once: the backoff is ours
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
            f"{passed_over(self.passed_over)}"
        )
