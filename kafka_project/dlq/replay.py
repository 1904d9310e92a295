"""Replaying DLQ records to the topic they came from, once the cause of their failure is fixed.

Each replayed record keeps its key, value and original headers, drops the `dlq.*` headers of its
failure and carries `dlq.replay.count` (one more than before). A record already replayed
--max-replays times is refused rather than sent round the loop again.

Each original comes back once, however many copies the DLQ holds (an at-least-once consumer that
dies between a copy's acknowledgement and its offset commit writes the copy again) and however
often the replay runs: a copy whose dlq.original.topic/partition/offset was met before, in this run
or below the group's committed position, is a duplicate and is passed over. A replayed record and
the replay group's new position are committed in one Kafka transaction, so a crash between the
two cannot send a record twice. Records a run passes over (filtered out, refused, duplicates) are
not revisited by that group. A dry run reads from the group's position without joining the group.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from kafka_project.cli import stop_on_signals
from kafka_project.cluster import (
    METADATA_TIMEOUT_S,
    client_config,
    existing_topics,
    produce,
    read_topic,
    require_topics,
)
from kafka_project.dlq.headers import (
    DLQ_TOPIC_CONFIG,
    HEADER_PREFIX,
    REPLAY_COUNT_HEADER,
    REPLAY_GROUP_HEADER,
    describe,
    received_headers,
)
from kafka_project.errors import UserError
from kafka_project.transactions import transactional_producer_config

ORIGIN_HEADERS = tuple(f"{HEADER_PREFIX}original.{name}" for name in ("topic", "partition", "offset"))
TRANSACTION_TIMEOUT_S = 30.0
# Reading the DLQ below the group's position, on every run: about 8 s per million records here
# (a 5-million-record DLQ took 33 s, past read_topic's default 30 s, and no replay could start).
HISTORY_READ_TIMEOUT_S = 3600.0
# Where a DLQ copy came from: (topic, partition, offset) as its headers say, the identity of the
# original record.
Origin = tuple[str, str, str]
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


def origin_of(msg: Message) -> Origin | None:
    """The original's coordinates; None when a header is missing (the record is refused anyway)."""
    topic, partition, offset = (header(msg, name) for name in ORIGIN_HEADERS)
    return (topic, partition, offset) if topic and partition and offset else None


def describe_origin(origin: Origin) -> str:
    return f"{quoted(origin[0])} [{quoted(origin[1])}] offset {quoted(origin[2])}"


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
    added = [(REPLAY_COUNT_HEADER, str(replays + 1).encode())]
    if (group := header(msg, f"{HEADER_PREFIX}consumer.group")) is not None:
        added.append((REPLAY_GROUP_HEADER, group.encode()))  # the other groups counted it already
    return Decision("replay", target=target, headers=(*kept, *added))


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


def group_positions(consumer: Consumer, topic: str) -> dict[int, int]:
    """The replay group's committed position in each DLQ partition (OFFSET_BEGINNING if none)."""
    partitions = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic].partitions
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=METADATA_TIMEOUT_S)
    return {tp.partition: tp.offset if tp.offset >= 0 else OFFSET_BEGINNING for tp in committed}


def refuse_a_second_replay(args: argparse.Namespace) -> None:
    """One replay per group at a time: each knows only the originals it met and those below the
    group's position, so two at once replayed copies of one original in two DLQ partitions twice."""
    admin = AdminClient(client_config(args.bootstrap_servers))
    described = admin.describe_consumer_groups([args.group_id], request_timeout=METADATA_TIMEOUT_S)
    group = described[args.group_id].result(METADATA_TIMEOUT_S)
    if group.members:
        raise UserError(
            f"the replay group '{args.group_id}' has {len(group.members)} member(s): another replay "
            "runs, or one was killed less than its session timeout (45 s) ago; wait, or give this one "
            "another --group-id"
        )


def handled_origins(args: argparse.Namespace, positions: dict[int, int]) -> set[Origin]:
    """The originals of the DLQ records the group has passed already (below its positions)."""
    ranges = {p: (OFFSET_BEGINNING, position) for p, position in positions.items() if position > 0}
    return {
        origin
        for msg in read_topic(
            args.bootstrap_servers, args.topic, HISTORY_READ_TIMEOUT_S, DLQ_TOPIC_CONFIG, ranges
        )
        if (origin := origin_of(msg)) is not None
    }


def unread_records(
    args: argparse.Namespace, positions: dict[int, int], stop: threading.Event
) -> Iterator[Message]:
    """A dry run's records: from the group's positions to the end, without joining the group (a
    replay of the same group running meanwhile is not disturbed, nor its records counted twice)."""
    ranges = {p: (position, None) for p, position in positions.items()}
    for msg in read_topic(args.bootstrap_servers, args.topic, ranges=ranges, config=DLQ_TOPIC_CONFIG):
        if stop.is_set():
            return
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
    tally = {"replayed": 0, "refused": 0, "skipped": 0, "duplicates": 0}
    producer = None
    try:
        require_topics(consumer, args.bootstrap_servers, [args.topic], {args.topic: DLQ_TOPIC_CONFIG})
        topics = existing_topics(consumer, args.bootstrap_servers)
        if not args.dry_run:  # a dry run joins no group: it may look while a replay runs
            refuse_a_second_replay(args)
        positions = group_positions(consumer, args.topic)
        met = handled_origins(args, positions)
        if args.dry_run:
            source = unread_records(args, positions, stop)
        else:
            producer = Producer(
                transactional_producer_config(args.bootstrap_servers, f"{args.group_id}-{uuid.uuid4()}")
            )
            producer.init_transactions(TRANSACTION_TIMEOUT_S)
            source = dlq_records(consumer, args.topic, stop)
        for msg in source:
            origin = origin_of(msg)
            decision = duplicate(origin) if origin in met else decide(msg, args, topics)
            if origin is not None:
                met.add(origin)
            label = f"{describe(msg)} (orderId {order_id(msg) or '-'})"
            if decision.action == "replay":
                if producer is not None:
                    send(producer, consumer, msg, decision)  # committed when it returns
                print(f"{'Would replay' if args.dry_run else 'Replayed'} {label} to {decision.target}")
                tally["replayed"] += 1
            else:
                print(f"{PASSED_OVER[decision.action]} {label}: {decision.reason}")
                tally[TALLY[decision.action]] += 1
                if producer is not None:
                    consumer.commit(offsets=[next_offset(msg)], asynchronous=False)
            if args.limit and tally["replayed"] >= args.limit:
                break
            if decision.action == "replay" and args.rate:
                stop.wait(1 / args.rate)
    finally:
        consumer.close()
    return tally


PASSED_OVER = {"skip": "Skipped", "refuse": "Refused", "duplicate": "Duplicate"}
TALLY = {"skip": "skipped", "refuse": "refused", "duplicate": "duplicates"}


def duplicate(origin: Origin | None) -> Decision:
    assert origin is not None  # only a record with an origin can repeat one
    return Decision("duplicate", f"second copy of {describe_origin(origin)}, which this group has met")


def send(producer: Producer, consumer: Consumer, msg: Message, decision: Decision) -> None:
    """Produce the record and commit the group's new position in one transaction: both or neither."""
    try:
        producer.begin_transaction()
        produce(
            producer,
            decision.target,
            key=msg.key(),
            value=msg.value(),
            headers=list(decision.headers),
        )
        producer.send_offsets_to_transaction(
            [next_offset(msg)], consumer.consumer_group_metadata(), TRANSACTION_TIMEOUT_S
        )
        producer.commit_transaction(TRANSACTION_TIMEOUT_S)
    except KafkaException as exc:
        with contextlib.suppress(KafkaException):  # if this fails too, the broker aborts it in time
            producer.abort_transaction(TRANSACTION_TIMEOUT_S)
        reason = exc.args[0].str()
        raise UserError(
            f"replaying {describe(msg)} to {decision.target} failed: {reason}; nothing was committed"
        ) from None


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
