"""Replaying DLQ records to the topic they came from, once the cause of their failure is fixed.

Each replayed record keeps its key, value and original headers, drops the `dlq.*` headers of its
failure and carries `dlq.replay.count` (one more than before). A record already replayed
--max-replays times is refused rather than sent round the loop again. Progress is committed to the
replay's own consumer group after the broker acknowledged each replayed record, so running the
same replay again does not send it again (only a crash between that acknowledgement and the commit
does); records a run passes over (filtered out or refused) are not revisited by that group either.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from kafka_project.cli import stop_on_signals
from kafka_project.cluster import client_config, existing_topics, produce, require_topics
from kafka_project.dlq.headers import DLQ_TOPIC_CONFIG, HEADER_PREFIX, describe, received_headers
from kafka_project.errors import UserError
from kafka_project.producer.producer import producer_config

REPLAY_COUNT_HEADER = f"{HEADER_PREFIX}replay.count"
SHOWN_HEADER_CHARS = 40  # a header quoted in a reason is cut here: any producer may have set it


@dataclass(frozen=True)
class Decision:
    action: str  # "replay", "skip" or "refuse"
    reason: str = ""
    target: str = ""
    headers: tuple[tuple[str, bytes | None], ...] = ()


def header(msg: Message, name: str) -> str | None:
    values = [value for key, value in received_headers(msg) if key == name]
    return values[-1].decode(errors="replace") if values and values[-1] is not None else None


def order_id(msg: Message) -> str | None:
    """The record's key, the orderId; None when it has none."""
    key = msg.key()
    return key.decode(errors="replace") if key else None


def decide(msg: Message, args: argparse.Namespace, topics: set[str]) -> Decision:
    """What to do with one DLQ record, from its headers, the replay's filters and the cluster's
    topics (a record for a topic that is gone is refused, not retried on every run)."""
    if args.error_type and header(msg, f"{HEADER_PREFIX}error.type") not in args.error_type:
        return Decision("skip", "error type filtered out")
    if args.order_id and order_id(msg) not in args.order_id:
        return Decision("skip", "orderId filtered out")
    target = header(msg, f"{HEADER_PREFIX}original.topic")
    if not target:
        return Decision("refuse", f"no {HEADER_PREFIX}original.topic header")
    if target not in topics:
        return Decision("refuse", f"its original topic {quoted(target)} does not exist")
    count = header(msg, REPLAY_COUNT_HEADER)
    if count is not None and not is_whole_number(count):
        # A DLQ copy keeps the original's headers, so this one may come from any producer.
        return Decision("refuse", f"{REPLAY_COUNT_HEADER} {quoted(count)} is not a whole number")
    replays = int(count or 0)
    if replays >= args.max_replays:
        return Decision("refuse", f"replayed {replays} times already (--max-replays {args.max_replays})")
    kept = tuple((k, v) for k, v in received_headers(msg) if not k.startswith(HEADER_PREFIX))
    return Decision(
        "replay", target=target, headers=(*kept, (REPLAY_COUNT_HEADER, str(replays + 1).encode()))
    )


def is_whole_number(text: str) -> bool:
    return text.isascii() and text.isdigit()  # int() would also take "-1", " 2", "1_0"


def quoted(text: str) -> str:
    return repr(text[:SHOWN_HEADER_CHARS]) + ("..." if len(text) > SHOWN_HEADER_CHARS else "")


def dlq_records(consumer: Consumer, topic: str, stop: threading.Event) -> Iterator[Message]:
    """The group's unconsumed DLQ records, up to the end of every partition as it is now."""
    assigned: set[int] = set()
    finished: set[int] = set()
    consumer.subscribe([topic], on_assign=lambda _c, parts: assigned.update(p.partition for p in parts))
    while not stop.is_set() and (not assigned or finished < assigned):
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if error := msg.error():
            if error.code() == KafkaError._PARTITION_EOF:
                finished.add(partition_of(msg))
                continue
            raise UserError(f"reading {topic} failed: {error.str()}")
        yield msg


def partition_of(msg: Message) -> int:
    partition = msg.partition()
    assert partition is not None  # set on every record and partition EOF a consumer returns
    return partition


def next_offset(msg: Message) -> TopicPartition:
    """The group's position once msg is done: the offset after it."""
    topic, offset = msg.topic(), msg.offset()
    assert topic is not None and offset is not None  # set on every record a consumer returns
    return TopicPartition(topic, partition_of(msg), offset + 1)


def replay(args: argparse.Namespace, stop: threading.Event) -> dict[str, int]:
    consumer = Consumer(
        client_config(
            args.bootstrap_servers,
            **{
                "group.id": args.group_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            },
        )
    )
    producer = Producer(producer_config(args.bootstrap_servers))
    tally = {"replayed": 0, "refused": 0, "skipped": 0}
    try:
        require_topics(consumer, args.bootstrap_servers, [args.topic], {args.topic: DLQ_TOPIC_CONFIG})
        topics = existing_topics(consumer, args.bootstrap_servers)
        for msg in dlq_records(consumer, args.topic, stop):
            decision = decide(msg, args, topics)
            label = f"{describe(msg)} (orderId {order_id(msg) or '-'})"
            if decision.action == "replay":
                print(f"{'Would replay' if args.dry_run else 'Replayed'} {label} to {decision.target}")
                if not args.dry_run:
                    send(producer, msg, decision)
                tally["replayed"] += 1
            else:
                print(f"{'Skipped' if decision.action == 'skip' else 'Refused'} {label}: {decision.reason}")
                tally["skipped" if decision.action == "skip" else "refused"] += 1
            if not args.dry_run:
                consumer.commit(offsets=[next_offset(msg)], asynchronous=False)
            if args.limit and tally["replayed"] >= args.limit:
                break
            if decision.action == "replay" and args.rate:
                stop.wait(1 / args.rate)
    finally:
        consumer.close()
    return tally


def send(producer: Producer, msg: Message, decision: Decision) -> None:
    """Produce and wait for the broker's acknowledgement: only then may the DLQ offset be committed."""
    failures: list[KafkaError] = []
    produce(
        producer,
        decision.target,
        key=msg.key(),
        value=msg.value(),
        headers=list(decision.headers),
        on_delivery=lambda err, _m: failures.append(err) if err else None,
    )
    if producer.flush(30) or failures:
        reason = failures[0].str() if failures else "no acknowledgement within 30 s"
        raise UserError(
            f"replaying {describe(msg)} to {decision.target} failed: {reason}; nothing was committed"
        )


def run_replay(args: argparse.Namespace) -> int:
    try:
        tally = replay(args, stop_on_signals())
    except KafkaException as exc:
        raise UserError(f"replay failed: {exc.args[0].str()}") from exc
    names = {"replayed": "would_replay"} if args.dry_run else {}  # a dry run sent nothing
    if args.dry_run:
        print("Dry run: nothing was sent or committed.")
    print("Summary: " + " ".join(f"{names.get(name, name)}={count}" for name, count in tally.items()))
    return 0
