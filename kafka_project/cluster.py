"""Talking to the cluster outside the hot path: client settings, start-up checks, reading a topic."""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypedDict, Unpack

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from kafka_project.errors import InvalidInputError, UserError

START_BROKER_HINT = "start one with 'docker compose up -d' or 'bin/kafka-local start'"
METADATA_TIMEOUT_S = 10.0
FIRST_ANSWER_S = 2.0  # a broker slower than this to answer gets a `Waiting:` line
TOPIC_RECHECK_S = 2.0

# librdkafka logs every failed connection attempt; our error callback reports them once instead.
_quiet_librdkafka = logging.getLogger("librdkafka")
_quiet_librdkafka.addHandler(logging.NullHandler())
_quiet_librdkafka.propagate = False


_last_client_error: KafkaError | None = None
_client_errors = 0
_last_reported_at: dict[int, float] = {}  # error code -> when it was last printed
REPORT_SAME_ERROR_EVERY_S = 60.0
_recording_only = False  # while True, client errors are recorded, not printed
# Settings from --config (security, SASL, ...); set once at start-up by cli.parse_with_connection.
_client_properties: dict[str, str] = {}
# A property whose name contains one of these holds a credential: its value is never printed.
SECRET_NAME_PARTS = (
    "password",
    "secret",
    "jaas",
    "token",
    "key.pem",
    "passphrase",
    "private.key",
    "user.info",
)
HIDDEN = "[hidden]"


def use_client_properties(properties: dict[str, str]) -> None:
    _client_properties.clear()
    _client_properties.update(properties)


def report_client_error(err: KafkaError) -> None:
    """error_cb: print each kind of client error at most once a minute, not once per reconnect."""
    global _last_client_error, _client_errors
    _last_client_error = err
    _client_errors += 1
    if _recording_only:
        return
    now = time.monotonic()
    if now - _last_reported_at.get(err.code(), -REPORT_SAME_ERROR_EVERY_S) >= REPORT_SAME_ERROR_EVERY_S:
        _last_reported_at[err.code()] = now
        print(f"kafka: {err.str()}", file=sys.stderr)


def is_fatal(error: KafkaError) -> bool:
    """The client can do nothing more. A consumer's fatal error (a static member fenced by another
    with its group.instance.id) comes as a record whose error is _FATAL with fatal() unset."""
    return error.fatal() or error.code() == KafkaError._FATAL


def client_error_count() -> int:
    """How many errors the clients' error callbacks have reported, printed or not."""
    return _client_errors


def client_config(bootstrap_servers: str, **settings: object) -> dict:
    """Settings every client here shares, then --config's, then the caller's own: the settings
    that decide delivery guarantees always win over a properties file."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "error_cb": report_client_error,
        "logger": _quiet_librdkafka,
        **_client_properties,
        **settings,
    }


# The clients the scripts build, reduced to the settings librdkafka checks against a properties file:
# every producer here is idempotent (so acks must be all), every consumer is in a group.
CHECKED_CLIENTS: tuple[tuple[str, type[Producer] | type[Consumer], dict], ...] = (
    ("idempotent producer", Producer, {"enable.idempotence": True}),
    ("consumer", Consumer, {"group.id": "config-check"}),
)


# Building the clients is the whole check: no broker to connect to (an SSL or SASL client would
# start a handshake at once), and nothing printed by the error callback.
CHECK_SETTINGS = {"logger": _quiet_librdkafka, "error_cb": lambda _error: None}


def check_client_properties(config_file: Path) -> None:
    """Build and discard the clients from --config's settings, so that a bad file is one line at
    start-up naming the file and the property, not a traceback at the first client built."""
    if refusal(_client_properties) is None:
        return
    # Add the properties in file order: the one that turns the clients down is the one to name.
    accepted: dict[str, str] = {}
    for name, value in _client_properties.items():
        accepted[name] = value
        if problem := refusal(accepted):
            message = f"config file {config_file}: {name}={value} is refused by librdkafka ({problem})"
            raise InvalidInputError(redacted(message, _client_properties))


def refusal(properties: dict[str, str]) -> str | None:
    """Why librdkafka will not build one of CHECKED_CLIENTS with these properties; None if it builds both."""
    for kind, client_class, own_settings in CHECKED_CLIENTS:
        try:
            client = client_class({**CHECK_SETTINGS, **properties, **own_settings})
        except (KafkaException, ValueError, TypeError) as exc:
            return f"{kind}: {construction_error_text(exc)}"
        if isinstance(client, Consumer):
            client.close()
    return None


def construction_error_text(exc: Exception) -> str:
    error = exc.args[0] if exc.args else None
    text = error.str() if isinstance(error, KafkaError) else str(exc)
    return re.sub(r"^Failed to create (producer|consumer): ", "", text)  # the caller names the client


def refused_settings_text(exc: Exception) -> str:
    """Why librdkafka refused to build a client, with --config's secrets hidden."""
    return redacted(construction_error_text(exc), _client_properties)


def is_secret(name: str) -> bool:
    return any(part in name.lower() for part in SECRET_NAME_PARTS)


def redacted(text: str, properties: dict[str, str]) -> str:
    """text with every secret property's value hidden, wherever it occurs (librdkafka quotes some
    values it refuses). Longest first, so that no part of a longer secret is left behind."""
    secrets = sorted((value for name, value in properties.items() if is_secret(name) and value), key=len)
    for secret in reversed(secrets):
        text = text.replace(secret, HIDDEN)
    return text


def record_pending_errors(client: Consumer | Producer) -> None:
    """Serve queued error callbacks (poll serves them) without printing, so that a failed
    start-up check can name the cause, e.g. rejected credentials, in its one line."""
    global _recording_only
    _recording_only = True
    try:
        client.poll(0)
    finally:
        _recording_only = False


def existing_topics(client: Consumer | Producer, bootstrap_servers: str) -> set[str]:
    """The cluster's topic names; a broker that does not answer is a one-line UserError, and one
    that is slow to answer gets a `Waiting:` line first, so that no wait is silent."""
    try:
        return set(client.list_topics(timeout=FIRST_ANSWER_S).topics)
    except KafkaException:
        refuse_if_credentials_rejected(client, bootstrap_servers)
    print(
        f"Waiting: no answer from Kafka at {bootstrap_servers} yet (giving up after "
        f"{METADATA_TIMEOUT_S:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    try:
        return set(client.list_topics(timeout=METADATA_TIMEOUT_S - FIRST_ANSWER_S).topics)
    except KafkaException as exc:
        refuse_if_credentials_rejected(client, bootstrap_servers)
        raise UserError(
            f"cannot reach Kafka at {bootstrap_servers} ({exc.args[0].str()}); {START_BROKER_HINT}"
        ) from None


def refuse_if_credentials_rejected(client: Consumer | Producer, bootstrap_servers: str) -> None:
    record_pending_errors(client)
    if _last_client_error is not None and _last_client_error.code() == KafkaError._AUTHENTICATION:
        if "mechanism handshake failed" in _last_client_error.str():  # no SASL at that address
            raise UserError(
                f"Kafka at {bootstrap_servers} did not take SASL ({_last_client_error.str()}); is it a "
                "SASL listener? --bootstrap-servers and KAFKA_BOOTSTRAP_SERVERS win over "
                "bootstrap.servers in --config"
            ) from None
        raise UserError(
            f"Kafka at {bootstrap_servers} rejected the credentials ({_last_client_error.str()}); "
            "check sasl.username and sasl.password in --config"
        ) from None


# Topic name -> the settings it must be created with (the DLQ's record size, the stats topic's
# compaction), so that the hint for a missing topic creates it right.
TopicConfigs = Mapping[str, Mapping[str, str]]


def missing_topic_message(topic: str, bootstrap_servers: str, config: Mapping[str, str] | None = None) -> str:
    settings = "".join(f" --config {name}={value}" for name, value in (config or {}).items())
    create = f"kafka-topics --bootstrap-server {bootstrap_servers} --create --topic {topic}{settings}"
    return (
        f"topic '{topic}' does not exist on {bootstrap_servers}; create it with 'bin/{create}' "
        f"(with Docker: 'docker exec kafka {create}')"
    )


def require_topics(
    client: Consumer | Producer,
    bootstrap_servers: str,
    topics: list[str],
    configs: TopicConfigs | None = None,
) -> None:
    """Every topic must exist now: a missing one is a UserError at once."""
    wait_for_topics(client, bootstrap_servers, topics, 0.0, threading.Event(), configs)


def wait_for_topics(
    client: Consumer | Producer,
    bootstrap_servers: str,
    topics: list[str],
    wait_s: float | None,
    stop: threading.Event,
    configs: TopicConfigs | None = None,
) -> bool:
    """Return True once every topic exists. A missing one is waited for (a fresh broker may still be
    creating it) with one `Waiting:` line, for up to wait_s (None: until stopped; 0: not at all),
    then it is a UserError naming how to create it. False if a stop was requested while waiting."""
    deadline = None if wait_s is None else time.monotonic() + wait_s
    announced = False
    while not stop.is_set():
        present = existing_topics(client, bootstrap_servers)
        missing = [topic for topic in topics if topic not in present]
        if not missing:
            return True
        message = missing_topic_message(missing[0], bootstrap_servers, (configs or {}).get(missing[0]))
        if deadline is not None and time.monotonic() >= deadline:
            raise UserError(message)
        if not announced:
            print(f"Waiting: {message}", file=sys.stderr)
            announced = True
        stop.wait(TOPIC_RECHECK_S if deadline is None else min(TOPIC_RECHECK_S, deadline - time.monotonic()))
    return False


def read_topic(
    bootstrap_servers: str,
    topic: str,
    timeout_s: float = 30.0,
    config: Mapping[str, str] | None = None,
    ranges: Mapping[int, tuple[int, int | None]] | None = None,
) -> Iterator[Message]:
    """Every committed record of a topic, from the beginning to the current end, without a group
    commit. `config`: the settings the topic is created with, for the hint when it is missing.
    `ranges`: only these partitions, each from its start offset (OFFSET_BEGINNING: the first
    record kept) up to, not including, its stop offset (None: the current end)."""
    consumer = Consumer(
        client_config(
            bootstrap_servers,
            **{
                "group.id": f"reader-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            },
        )
    )
    try:
        require_topics(consumer, bootstrap_servers, [topic], {topic: config or {}})
        if ranges is None:
            partitions = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic].partitions
            ranges = {partition: (OFFSET_BEGINNING, None) for partition in partitions}
        stops = {p: stop for p, (start, stop) in ranges.items() if stop is None or stop > max(start, 0)}
        if not stops:
            return
        consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in stops])
        unfinished = set(stops)
        deadline = time.monotonic() + timeout_s
        while unfinished and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None  # set on records and partition EOFs
            if error := msg.error():
                if error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                unfinished.discard(partition)
                continue
            stop = stops[partition]
            if stop is not None and offset >= stop:
                unfinished.discard(partition)
                consumer.pause([TopicPartition(topic, partition)])
                continue
            yield msg
            if stop is not None and offset + 1 >= stop:
                unfinished.discard(partition)
                consumer.pause([TopicPartition(topic, partition)])
        if unfinished:
            raise UserError(f"timed out reading {topic} after {timeout_s:.0f} s")
    finally:
        consumer.close()


# Record headers as Producer.produce takes them: a list of its exact type, as lists are invariant.
Headers = list[tuple[str, str | bytes | None]]


class Record(TypedDict, total=False):
    """The keyword arguments of Producer.produce that produce() passes on."""

    key: bytes | None
    value: bytes | None
    partition: int
    headers: Headers
    on_delivery: Callable[[KafkaError | None, Message], None]


# librdkafka's answer for a topic its metadata briefly lacks (a broker that has just restarted says
# so while it recovers its partitions): produce() raises it, and queued records fail with it, even
# those sent once that the broker may have written (producer/sender.py reads back before resending).
TOPIC_UNKNOWN = {KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART}
# How long produce() waits for it, then raises: librdkafka's delivery timeout (message.timeout.ms,
# 300 s by default), the bound it keeps for a record already queued.
TOPIC_UNKNOWN_WAIT_S = 300.0


def produce(
    producer: Producer, topic: str, stop: threading.Event | None = None, **record: Unpack[Record]
) -> None:
    """Producer.produce that waits for room when the local queue is full instead of failing, and
    for a topic that is briefly unknown (up to TOPIC_UNKNOWN_WAIT_S, then KafkaException). Once
    `stop` is set it waits no more: BufferError, or the KafkaException, at once."""
    unknown_since = None
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            if stop is not None and stop.is_set():
                raise
            producer.poll(0.1)  # serving delivery reports frees queue space
        except KafkaException as exc:
            now = time.monotonic()
            unknown_since = unknown_since or now
            if exc.args[0].code() not in TOPIC_UNKNOWN or now - unknown_since > TOPIC_UNKNOWN_WAIT_S:
                raise
            if stop is not None and stop.is_set():
                raise
            producer.poll(0.2)


def partitions_with_open_transactions(bootstrap_servers: str, topic: str) -> list[int]:
    """Partitions whose last stable offset is behind their end: a transaction there is still open,
    and read_committed readers see nothing past it until it commits or the broker aborts it."""
    ends = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = Consumer(
            client_config(bootstrap_servers, **{"group.id": "watermarks", "isolation.level": isolation})
        )
        try:
            partitions = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic].partitions
            ends[isolation] = {
                p: consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=METADATA_TIMEOUT_S, cached=False
                )[1]
                for p in partitions
            }
        finally:
            consumer.close()
    return [p for p, stable in ends["read_committed"].items() if stable < ends["read_uncommitted"][p]]
