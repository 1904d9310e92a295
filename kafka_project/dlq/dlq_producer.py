"""The dead-letter queue: forward failed records unchanged, and list what is in the DLQ and why.

A DLQ record is the original record's key and value, byte for byte, with the original headers
plus these (UTF-8 strings):
  dlq.original.topic / .partition / .offset / .timestamp   where it came from (timestamp: epoch ms)
  dlq.error.type / dlq.error.message                       why it failed
  dlq.attempts                                             processing attempts (0: never decodable)
  dlq.consumer.group                                       who gave up on it
  dlq.failed.at                                            when (ISO 8601, UTC)

Examples:
  python kafka_project/dlq/dlq_producer.py list
  python kafka_project/dlq/dlq_producer.py list --json
  python kafka_project/dlq/dlq_producer.py replay --dry-run
  python kafka_project/dlq/dlq_producer.py replay --error-type TemporaryProcessingError --limit 10 --rate 5
  python kafka_project/dlq/dlq_producer.py list --topic orders-dlq --bootstrap-servers localhost:9092
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from kafka_project.cli import (
    add_common_args,
    add_env_flag,
    make_parser,
    order_codec,
    parse_with_connection,
    positive_float,
    positive_int,
    run,
)
from kafka_project.cluster import TOPIC_UNKNOWN, client_config, produce, read_topic
from kafka_project.dlq import replay
from kafka_project.dlq.headers import (
    DLQ_MAX_MESSAGE_BYTES,
    DLQ_QUEUE_KBYTES,
    DLQ_TOPIC_CONFIG,
    Headers,
    describe,
    dlq_headers,
    received_headers,
)
from kafka_project.errors import UserError
from kafka_project.order_codec import OrderCodec, OrderDecodeError
from kafka_project.registry import RegistryUnavailableError

# Errors that say the DLQ will never take this record: retrying cannot help.
REFUSED_FOR_GOOD = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.POLICY_VIOLATION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
}


class DeadLetterError(UserError):
    """The DLQ refused a record for good; its offset stays uncommitted."""


def dlq_producer_config(bootstrap_servers: str) -> dict:
    # Idempotent with acks=all: a DLQ copy, once acknowledged, is durable and written once.
    return client_config(
        bootstrap_servers,
        **{
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": DLQ_MAX_MESSAGE_BYTES,
            "queue.buffering.max.kbytes": DLQ_QUEUE_KBYTES,
        },
    )


class DeadLetterPublisher:
    """Sends failed records to the DLQ without blocking; `on_acked` runs once the broker has the copy."""

    def __init__(self, producer: Producer, topic: str, group_id: str, resend_failed: bool = True) -> None:
        self.producer = producer
        self.topic = topic
        self.group_id = group_id
        # A transactional producer must not resend: a failed send aborts the whole transaction.
        self.resend_failed = resend_failed
        self.refusal: DeadLetterError | None = None  # a copy refused for good in a transaction
        # Copies to send again. Not from the delivery callback itself: produce() may poll() to wait
        # for room or for the topic, and a poll inside a callback aborts the process (confluent-kafka
        # asserts "cs != NULL"; seen with the DLQ topic deleted under the consumer).
        self.to_resend: list[tuple[Message, Headers, Callable[[], None]]] = []

    def send(self, original: Message, error: Exception, attempts: int, on_acked: Callable[[], None]) -> None:
        headers = dlq_headers(original, error, attempts, self.group_id, datetime.now(UTC))
        self._produce(original, headers, on_acked)

    def _produce(self, original: Message, headers: Headers, on_acked: Callable[[], None]) -> None:
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                on_acked()
            elif not self.resend_failed:  # the transaction aborts; remember a refusal for good
                if err.code() in REFUSED_FOR_GOOD and self.refusal is None:
                    self.refusal = self.refused(original, err)
            elif err.retriable() or err.code() == KafkaError._MSG_TIMED_OUT or err.code() in TOPIC_UNKNOWN:
                print(f"DLQ write for {describe(original)} failed ({err.str()}); retrying", file=sys.stderr)
                self.to_resend.append((original, headers, on_acked))
            else:
                raise self.refused(original, err)

        try:
            produce(
                self.producer,
                self.topic,
                key=original.key(),
                value=original.value(),
                headers=headers,
                on_delivery=delivered,
            )
        except KafkaException as exc:  # refused before sending, e.g. larger than message.max.bytes
            if exc.args[0].code() not in REFUSED_FOR_GOOD:
                raise
            raise self.refused(original, exc.args[0]) from exc

    def refused(self, original: Message, err: KafkaError) -> DeadLetterError:
        size = len(original.value() or b"")
        return DeadLetterError(
            f"the DLQ topic {self.topic} refused {describe(original)} ({size} bytes): {err.str()}; "
            "its offset is not committed: fix the DLQ topic (e.g. its max.message.bytes), then restart"
        )

    def take_refusal(self) -> DeadLetterError | None:
        """The refusal for good seen in the aborted transaction, if any (and forget it)."""
        refusal, self.refusal = self.refusal, None
        return refusal

    def poll(self) -> None:
        self.producer.poll(0)
        self.resend()

    def resend(self) -> None:
        while self.to_resend:
            self._produce(*self.to_resend[0])  # off the list once librdkafka has it: counted till then
            self.to_resend.pop(0)

    def flush(self, timeout_s: float) -> int:
        """Wait for every pending DLQ copy, sending failed ones again; returns how many are still
        unacknowledged."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.resend()
            pending = self.producer.flush(max(0.0, deadline - time.monotonic()))
            if not self.to_resend or time.monotonic() >= deadline:
                return pending + len(self.to_resend)


def format_dlq_record(msg: Message, codec: OrderCodec, first_copy: str | None = None) -> str:
    """One DLQ record for people: the decoded order (or why it is not one), whether it repeats an
    earlier copy (`first_copy`: where that one is), and every header."""
    try:
        body = f"order: {codec.decode(msg.value())}"
    except OrderDecodeError as exc:
        value = msg.value()
        size = "null" if value is None else f"{len(value)} bytes"
        body = f"value: {size}, not an order ({exc})"
    except RegistryUnavailableError as exc:  # listing goes on: the record is shown, not decoded
        body = f"value: not decoded ({exc})"
    headers = "".join(
        f"\n  {name}: {value.decode(errors='replace') if value is not None else None}"
        for name, value in received_headers(msg)
    )
    repeat = ""
    if first_copy is not None and (origin := replay.origin_of(msg)) is not None:
        repeat = f"\n  duplicate: second copy of {replay.describe_origin(origin)} (first: {first_copy})"
    return f"{describe(msg)}\n  {body}{repeat}{headers}"


def dlq_record_as_json(msg: Message, codec: OrderCodec, first_copy: str | None = None) -> str:
    """One DLQ record as one JSON line, for tools: the order (or null and why not), where the
    first copy of the same original is if this one repeats it (else null), and the headers."""
    try:
        order, problem = codec.decode(msg.value()).to_record(), None
        order["price"] = str(order["price"])  # exact, as a decimal string
    except (OrderDecodeError, RegistryUnavailableError) as exc:
        order, problem = None, str(exc)
    return json.dumps(
        {
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "key": None if (key := msg.key()) is None else key.decode(errors="replace"),
            "order": order,
            "not_an_order": problem,
            "duplicate_of": first_copy,
            "headers": {
                k: v.decode(errors="replace") if v is not None else None for k, v in received_headers(msg)
            },
        }
    )


def list_dlq(args: argparse.Namespace) -> int:
    codec = order_codec(args)
    records, duplicates = 0, 0
    first_copies: dict[replay.Origin, str] = {}  # each original's first copy met
    for msg in read_topic(
        args.bootstrap_servers, args.topic, timeout_s=args.timeout, config=DLQ_TOPIC_CONFIG
    ):
        origin = replay.origin_of(msg)
        first_copy = first_copies.get(origin) if origin is not None else None
        if origin is not None and first_copy is None:
            first_copies[origin] = describe(msg)
        duplicates += first_copy is not None
        print(
            dlq_record_as_json(msg, codec, first_copy)
            if args.json
            else format_dlq_record(msg, codec, first_copy) + "\n"
        )
        records += 1
    if not args.json:
        repeats = f", {duplicates} of them second copies of an original" if duplicates else ""
        print(f"{records} record(s) in {args.topic}{repeats}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(__doc__, common_args=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    list_command = add_common_args(
        commands.add_parser("list", help="print every DLQ record, decoded, with its headers")
    )
    add_env_flag(list_command, "--topic", "DLQ_TOPIC", "orders-dlq", "DLQ topic")
    list_command.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up reading after this long (default %(default)s)",
    )
    list_command.add_argument("--json", action="store_true", help="one JSON object per record and line")
    list_command.set_defaults(handler=list_dlq)

    replay_command = add_common_args(
        commands.add_parser(
            "replay",
            help="send DLQ records back to their original topic",
            description=replay.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    add_env_flag(replay_command, "--topic", "DLQ_TOPIC", "orders-dlq", "DLQ topic")
    add_env_flag(
        replay_command,
        "--group-id",
        "DLQ_REPLAY_GROUP_ID",
        "orders-dlq-replay",
        "consumer group that remembers the replay's progress",
    )
    replay_command.add_argument("--dry-run", action="store_true", help="print what would be replayed")
    replay_command.add_argument("--limit", type=positive_int, help="replay at most this many records")
    replay_command.add_argument("--rate", type=positive_float, metavar="N", help="at most N records a second")
    replay_command.add_argument(
        "--error-type",
        action="append",
        metavar="TYPE",
        help="only records whose dlq.error.type is TYPE (repeatable)",
    )
    replay_command.add_argument(
        "--order-id", action="append", metavar="ID", help="only the record(s) of this orderId (repeatable)"
    )
    replay_command.add_argument(
        "--max-replays",
        type=positive_int,
        default=3,
        help="refuse records already replayed this often (default %(default)s)",
    )
    replay_command.set_defaults(handler=replay.run_replay)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_with_connection(build_parser(), argv)


def cli() -> None:
    run(lambda: (args := parse_args()).handler(args))


if __name__ == "__main__":
    cli()
