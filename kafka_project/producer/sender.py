"""Handing orders to librdkafka: the delivery report, and sending again what librdkafka gave back
while the topic was unknown (a restarted broker says so while it recovers its partitions).

librdkafka gives back every record queued for such a topic, including records it had already
sent once: one the broker wrote before it died comes back too. So before sending anything again
the sender reads the topic from the oldest given-back record's timestamp on, and sends again only
what it does not find there, byte for byte (each order's value is unique: its orderId is in it).
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from kafka_project.cli import silence_stdout
from kafka_project.cluster import (
    METADATA_TIMEOUT_S,
    TOPIC_RECHECK_S,
    TOPIC_UNKNOWN,
    TOPIC_UNKNOWN_WAIT_S,
    client_config,
    produce,
    read_topic,
)
from kafka_project.errors import UserError

READ_BACK_TIMEOUT_S = 10.0  # reading the topic's tail; longer, and it is tried again later


@dataclass
class Unsent:
    """An order librdkafka gave back because the topic was unknown, with when that first happened
    and the timestamp it was produced with (the broker keeps that, or a later append time)."""

    key: bytes | None
    value: bytes | None
    since: float
    timestamp_ms: int


class DeliveryReport:
    """The delivery callback: prints each delivery (unless quiet), counts the failures and keeps the
    orders to send again."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.failed = 0
        self.unsent: deque[Unsent] = deque()
        self.stdout_closed = False  # a delivery line met a closed stdout: no more of them

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and err.code() in TOPIC_UNKNOWN:
            if not self.unsent:
                print(
                    f"Waiting: topic '{msg.topic()}' is unknown to the broker (restarting?)", file=sys.stderr
                )
            produced_at = msg.timestamp()[1]
            if produced_at <= 0:  # no timestamp: it was produced within librdkafka's delivery timeout
                produced_at = int((time.time() - TOPIC_UNKNOWN_WAIT_S) * 1000)
            self.unsent.append(Unsent(msg.key(), msg.value(), time.monotonic(), produced_at))
        elif err is not None:
            self.failed += 1
            key = (msg.key() or b"").decode(errors="replace")  # the orderId, or a customer id
            print(f"Delivery failed for the order keyed {key}: {err.str()}", file=sys.stderr)
        elif not self.quiet and not self.stdout_closed:
            try:
                print(f"Message delivered to {msg.topic()} [{msg.partition()}]")
            except BrokenPipeError:  # raised here, it would stop flush() serving the other reports
                silence_stdout()
                self.stdout_closed = True


class TopicUnknownError(UserError):
    """The topic stayed unknown to the broker for TOPIC_UNKNOWN_WAIT_S."""


def digest(value: bytes | None) -> bytes:
    return hashlib.blake2b(value or b"", digest_size=16).digest()


def written_since(bootstrap_servers: str, topic: str, timestamp_ms: int) -> set[bytes] | None:
    """The digests of the values the topic holds from timestamp_ms on, in every partition; None
    while the topic cannot be read (still unknown, a leader not yet elected)."""
    consumer = Consumer(client_config(bootstrap_servers, **{"group.id": "producer-read-back"}))
    try:
        metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic]
        if metadata.error is not None or not metadata.partitions:
            return None
        partitions = metadata.partitions
        wanted = [TopicPartition(topic, p, timestamp_ms) for p in partitions]
        starts = consumer.offsets_for_times(wanted, timeout=METADATA_TIMEOUT_S)
        if any(tp.error is not None for tp in starts):  # a partition not answered: read back later
            return None
        ranges = {tp.partition: (tp.offset, None) for tp in starts if tp.offset not in (-1, OFFSET_END)}
        records = read_topic(bootstrap_servers, topic, READ_BACK_TIMEOUT_S, ranges=ranges)
        return {digest(msg.value()) for msg in records}
    except (KafkaException, UserError, KeyError):  # KeyError: no metadata for the topic yet
        return None
    finally:
        consumer.close()


class OrderSender:
    """Hands orders to librdkafka, waits out a topic that is briefly unknown, and sends again what
    librdkafka gave back for it and the topic does not hold. An order sent again lands after orders
    of its key sent meanwhile: a restart can reorder a key's orders (librdkafka gives a partition's
    queue back in order, and that order is kept among the ones sent again)."""

    def __init__(
        self,
        producer: Producer,
        bootstrap_servers: str,
        topic: str,
        report: DeliveryReport,
        stop: threading.Event | None = None,
    ) -> None:
        self.producer = producer
        self.stop = stop or threading.Event()  # set: no more waiting for room or for the topic
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.report = report
        self.handed_over = 0  # new orders librdkafka took (sent again ones are not counted again)
        self.found_written = 0  # given back, but the broker had written them: not sent again
        self.next_read_back = 0.0
        self.gave_up: TopicUnknownError | None = None  # flush() stopped sending again

    def send(self, key: bytes | None, value: bytes | None) -> bool:
        """A new order; False if a stop came while librdkafka had no room or no topic for it."""
        if not self.hand_over(key, value):
            return False
        self.handed_over += 1
        return True

    def hand_over(self, key: bytes | None, value: bytes | None) -> bool:
        """Whether librdkafka took it: not when a stop came while waiting for room or for the
        topic. TopicUnknownError once the topic has been unknown for TOPIC_UNKNOWN_WAIT_S."""
        try:
            produce(self.producer, self.topic, self.stop, key=key, value=value)
        except BufferError:
            return False  # stopping: the queue stays full (the broker is down)
        except KafkaException as exc:
            if exc.args[0].code() not in TOPIC_UNKNOWN:
                raise
            if self.stop.is_set():
                return False
            raise self.unknown_for_too_long() from None
        return True

    def unknown_for_too_long(self) -> TopicUnknownError:
        return TopicUnknownError(
            f"topic '{self.topic}' unknown to the broker for {TOPIC_UNKNOWN_WAIT_S:.0f} s; stopped"
        )

    def send_again(self) -> None:
        """The orders librdkafka gave back, in the order it gave them back, once the topic can be
        read: those it holds are done, the others are handed to librdkafka again."""
        unsent = self.report.unsent
        if not unsent or time.monotonic() < self.next_read_back:
            return
        written = written_since(self.bootstrap_servers, self.topic, min(u.timestamp_ms for u in unsent))
        if written is None:
            if time.monotonic() - unsent[0].since > TOPIC_UNKNOWN_WAIT_S:
                raise self.unknown_for_too_long()
            self.next_read_back = time.monotonic() + TOPIC_RECHECK_S
            return
        while unsent:
            if digest(unsent[0].value) in written:
                self.found_written += 1
            elif not self.hand_over(unsent[0].key, unsent[0].value):
                return  # stopping: it stays unsent, and the summary counts it as failed
            unsent.popleft()

    def poll(self, timeout_s: float = 0) -> None:
        self.producer.poll(timeout_s)
        self.send_again()

    def flush(self, timeout_s: float) -> int:
        """Wait for every order, sending again what comes back; how many are still not delivered.
        Past TOPIC_UNKNOWN_WAIT_S it stops sending again (gave_up says why)."""
        deadline = time.monotonic() + timeout_s
        while True:
            undelivered = self.producer.flush(max(0.0, deadline - time.monotonic()))
            if not self.report.unsent or time.monotonic() >= deadline or self.gave_up:
                return undelivered + len(self.report.unsent)
            try:
                self.send_again()
            except TopicUnknownError as exc:
                self.gave_up = exc
            if self.report.unsent:  # the topic cannot be read yet: wait for the next try
                time.sleep(max(0.0, min(self.next_read_back, deadline) - time.monotonic()))
