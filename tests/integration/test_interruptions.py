"""Whatever interrupts the consumer, the commit position never passes a record that is not done.

A record is done when its order is counted or its DLQ copy is acknowledged. These tests stop the
consumer in the middle of a record (a second Ctrl-C in a retry wait, a closed stdout, a partition
revoked after poll) and check the committed offset and the DLQ on the real broker.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from kafka_project.consumer import consumer
from kafka_project.consumer.aggregate import RunningAverage
from kafka_project.consumer.processor import OrderProcessor
from kafka_project.consumer.state import aggregate_from_metadata
from kafka_project.order_codec import OrderCodec

from .conftest import (
    Topics,
    committed_offset,
    consume_in_process,
    consumer_args,
    headers_of,
    kafka_offsets,
    produce_orders,
    records,
    run_script,
    start_script,
    summary,
)


def dead_lettered_offsets(bootstrap_servers: str, topics: Topics) -> list[int]:
    return sorted(int(headers_of(m)["dlq.original.offset"]) for m in records(bootstrap_servers, topics.dlq))


def wait_for_lines(path: Path, text: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while path.read_text().count(text) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {text!r} in:\n{path.read_text()}"
        time.sleep(0.05)


def dead_letter_the_rest(topics: Topics) -> None:
    """What a restart does: every record from the committed offset on goes to the DLQ."""
    args = consumer_args(topics, "--failure-rate", "1", "--retry-backoff", "0", "--idle-timeout", "3")
    assert run_script("consumer", *args, "--quiet").returncode == 0


def test_a_second_ctrl_c_during_a_retry_wait_commits_only_what_is_done(bootstrap_servers, topics, tmp_path):
    """The review's reproduction: order 0 goes to the DLQ, order 1 is in its first retry wait when
    Ctrl-C is pressed twice. Order 1 is neither counted nor dead-lettered, so the committed offset
    must stay at 1, and a restart dead-letters orders 1 to 4."""
    produce_orders(topics.orders, 5)
    log = tmp_path / "consumer.log"
    # One order at a time, as in the review: order 1 waits while nothing else is in progress.
    args = consumer_args(topics, "--failure-rate", "1", "--retry-backoff", "1", "--max-in-flight", "1")
    process = start_script("consumer", *args, stdout_path=log)
    wait_for_lines(log, "Attempt 1/3 failed", 2)  # the second order's first failure: it now waits 1 s
    process.send_signal(signal.SIGINT)
    # Two signals close together can reach Python as one: the second waits for the first's line.
    wait_for_lines(log, "SIGINT: finishing up", 1)
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 130
    output = log.read_text()
    assert "Traceback" not in output
    assert summary(output)["processed"] == "0"
    assert summary(output)["dlq"] == "1"
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 1

    dead_letter_the_rest(topics)
    assert dead_lettered_offsets(bootstrap_servers, topics) == [0, 1, 2, 3, 4]


def test_a_closed_stdout_stops_the_consumer_without_skipping_a_record(bootstrap_servers, topics):
    """`consumer.py | head`: print fails in the middle of a record while DLQ copies of earlier
    records are still unacknowledged; their acknowledgements must not commit past it."""
    produce_orders(topics.orders, 3000)  # far more output than a pipe buffers
    args = consumer_args(topics, "--failure-rate", "1", "--retry-backoff", "0")
    process = start_script("consumer", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    moved = 0
    while moved < 20:  # like `head`: read a while, then go away
        line = process.stdout.readline()
        assert line, "the consumer stopped printing early"
        moved += line.startswith(b"Moved to DLQ")
    process.stdout.close()
    assert process.wait(60) == 141
    stderr = process.stderr.read().decode()
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert "stdout was closed" in stderr
    committed = committed_offset(bootstrap_servers, topics.group, topics.orders)
    assert 20 <= committed < 3000  # stopped in the middle, after what head read
    assert set(dead_lettered_offsets(bootstrap_servers, topics)) >= set(range(committed))

    dead_letter_the_rest(topics)
    assert set(dead_lettered_offsets(bootstrap_servers, topics)) == set(range(3000))


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_record_polled_before_its_partition_was_revoked_is_dropped(bootstrap_servers, topics, exactly_once):
    """consume() can run on_revoke after poll() returned a record: that record belongs to the
    partition's new owner and must be neither counted nor committed by this consumer, which is
    still in the group (a second consumer joined and took one of the two partitions)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_partitions([NewPartitions(topics.orders, 2)])[topics.orders].result(30)
    produce_orders(topics.orders, 40)  # keyed by orderId: both partitions get orders
    flags = ["--failure-rate", "0", "--quiet"] + (["--exactly-once"] if exactly_once else [])
    args = consumer.parse_args([*consumer_args(topics, *flags), "--bootstrap-servers", bootstrap_servers])
    first = Consumer(consumer.consumer_config(bootstrap_servers, topics.group, exactly_once))
    processor = consumer.make_processor(first, OrderCodec(), args)
    first.subscribe([topics.orders], on_assign=processor.on_assign, on_revoke=processor.on_revoke)
    second = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": topics.group})
    try:
        polled = {}  # partition -> a record polled while this consumer owned both
        deadline = time.monotonic() + 30
        while len(polled) < 2 and time.monotonic() < deadline:
            if (msg := first.poll(0.2)) is not None and not msg.error():
                polled.setdefault(msg.partition(), msg)
        assert len(polled) == 2
        second.subscribe([topics.orders])
        while len(first.assignment()) != 1 and time.monotonic() < deadline + 30:
            second.poll(0.1)
            first.poll(0.1)  # serves the rebalance: on_revoke, then on_assign of one partition
        (kept,) = first.assignment()
        lost = polled[1 - kept.partition]

        processor.process([lost], threading.Event())
        processor.finish(clean=True)
    finally:
        first.close()
        second.close()
    assert processor.running_average().count == 0
    assert committed_offset(bootstrap_servers, topics.group, topics.orders, lost.partition()) < 0
    assert records(bootstrap_servers, topics.stats) == []


def test_idle_timeout_ends_a_consumer_that_owns_no_partition(bootstrap_servers, topics, tmp_path):
    """Two consumers with --idle-timeout on a one-partition topic that keeps getting orders: the
    one that owns the partition stays busy, the one left without it exits after its idle time
    while orders still arrive. (It may have owned the partition until the second one joined: the
    rebalance can move it.) Between them every order is counted once, and all are committed."""
    args = consumer_args(topics, "--failure-rate", "0", "--idle-timeout", "3", "--quiet")
    logs = [tmp_path / f"consumer-{n}.log" for n in range(2)]
    consumers = [start_script("consumer", *args, stdout_path=log) for log in logs]
    trickle_args = ["--topic", topics.orders, "--count", "200", "--interval", "0.1", "--quiet"]
    trickle = start_script("producer", *trickle_args, stdout=subprocess.DEVNULL)
    while trickle.poll() is None and all(c.poll() is None for c in consumers):
        time.sleep(0.1)
    assert trickle.poll() is None, "the idle consumer was still running after 20 s of orders"
    idle = next(n for n, c in enumerate(consumers) if c.poll() is not None)
    assert consumers[idle].returncode == 0, logs[idle].read_text()
    assert trickle.wait(60) == 0
    busy = 1 - idle
    assert consumers[busy].wait(60) == 0, logs[busy].read_text()
    counted = [int(summary(log.read_text())["processed"]) for log in logs]
    assert counted[busy] > 0 and sum(counted) == 200, counted
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 200


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_session_lost_while_stalled_goes_through_on_lost(bootstrap_servers, topics, tmp_path, exactly_once):
    """The consumer stalls longer than max.poll.interval.ms (a slow order, a paused terminal): the
    group goes on without it, and its next poll reports the partition lost, not revoked. Nothing
    may be committed for it then; the consumer joins again and goes on from the last commit.
    Exactly-once counts every order once; at-least-once counts again only what was past the
    commit position at the stall."""
    produce_orders(topics.orders, 400)
    settings = tmp_path / "client.properties"
    settings.write_text("session.timeout.ms=6000\nmax.poll.interval.ms=6000\n")
    flags = ["--failure-rate", "0", "--idle-timeout", "3", "--quiet", "--config", str(settings)]
    flags += ["--exactly-once"] if exactly_once else []
    args = consumer.parse_args([*consumer_args(topics, *flags), "--bootstrap-servers", bootstrap_servers])
    callbacks: list[str] = []
    at_stall: list[tuple[int, int]] = []  # (orders counted, committed offset) when it stalled

    def note_callbacks(processor: OrderProcessor) -> None:
        on_revoke, on_lost = processor.on_revoke, processor.on_lost

        def revoked(kafka_consumer: Consumer, partitions: list) -> None:
            callbacks.append("revoke")
            on_revoke(kafka_consumer, partitions)

        def lost(kafka_consumer: Consumer, partitions: list) -> None:
            callbacks.append("lost")
            on_lost(kafka_consumer, partitions)

        processor.on_revoke = revoked  # type: ignore[method-assign]
        processor.on_lost = lost  # type: ignore[method-assign]

    def stall_once_after_100_orders(processor: OrderProcessor) -> None:
        if not at_stall and processor.running_average().count >= 100:
            at_stall.append(
                (
                    processor.running_average().count,
                    max(0, committed_offset(bootstrap_servers, topics.group, topics.orders)),
                )
            )
            time.sleep(9)  # past max.poll.interval.ms: the consumer leaves the group

    processor = consume_in_process(args, note_callbacks, stall_once_after_100_orders)

    assert at_stall, "the consumer never counted 100 orders"
    assert callbacks[0] == "lost", callbacks  # the loss first; then revokes of rejoins and the close
    assert callbacks.count("lost") == 1, callbacks
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 400
    prices = [OrderCodec().decode(m.value()).price for m in records(bootstrap_servers, topics.orders)]
    assert processor.dead_lettered == 0
    if exactly_once:  # restored from the last committed snapshot: every order once
        (committed,) = kafka_offsets(bootstrap_servers, topics)
        assert aggregate_from_metadata(committed.metadata) == RunningAverage(400, sum(prices))
    else:  # what was counted but not committed at the stall is counted again, nothing else
        counted, committed_then = at_stall[0]
        assert 400 <= processor.running_average().count <= 400 + counted - committed_then


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_an_assignment_slower_than_the_idle_timeout_is_not_idleness(
    bootstrap_servers, topics, exactly_once, capsys
):
    """A rebalance that takes longer than --idle-timeout (seen after a broker restart: a
    transactional call blocked 35 s, then the partitions came back), and records that arrive only
    after it: the new assignment starts the idle time afresh, it does not end the consumer."""
    flags = ["--failure-rate", "0", "--idle-timeout", "6", "--quiet"]
    flags += ["--exactly-once"] if exactly_once else []
    args = consumer.parse_args([*consumer_args(topics, *flags), "--bootstrap-servers", bootstrap_servers])
    producing: list[threading.Thread] = []

    def slow_assignment(processor: OrderProcessor) -> None:
        on_assign = processor.on_assign

        def assign(kafka_consumer: Consumer, partitions: list) -> None:
            time.sleep(8)  # longer than the idle timeout
            on_assign(kafka_consumer, partitions)
            if not producing:  # the orders arrive once the partition is assigned
                producing.append(threading.Thread(target=produce_orders, args=(topics.orders, 50)))
                producing[0].start()

        processor.on_assign = assign  # type: ignore[method-assign]

    consume_in_process(args, slow_assignment)
    producing[0].join()
    assert summary(capsys.readouterr().out)["processed"] == "50"
    assert committed_offset(bootstrap_servers, topics.group, topics.orders) == 50


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_second_ctrl_c_while_the_producer_waits_for_deliveries_still_prints_its_summary(
    bootstrap_servers, tmp_path, signum
):
    """The topic is deleted under a streaming producer: librdkafka gives its queued orders back and
    the producer waits for the topic, as after a broker restart. Ctrl-C, and a second one while it
    still waits: it stops at once. Before, that second Ctrl-C ended the producer without a summary
    (a review saw 390 orders it had printed as sent reported nowhere)."""
    topic = f"orders-deleted-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    log = tmp_path / "producer.log"
    process = start_script("producer", "--topic", topic, "--interval", "0.01", stdout_path=log)
    wait_for_lines(log, "Message delivered to", 20)
    admin.delete_topics([topic])[topic].result(30)
    wait_for_lines(log, "is unknown to the broker", 1)
    process.send_signal(signum)
    # The first signal ends the wait for the topic at once (a review saw it spin on, silent, for
    # minutes), and the producer says what it still waits for; the second (of either kind) stops it.
    wait_for_lines(log, "Waiting for ", 1, timeout=15)
    process.send_signal(signum)
    assert process.wait(60) == 130
    output = log.read_text()
    figures, sent = summary(output), output.count("Sent order:")
    assert "Traceback" not in output
    assert figures["sent"] == str(sent)
    assert int(figures["delivered"]) == output.count("Message delivered to") >= 20
    assert int(figures["delivered"]) + int(figures["failed"]) == sent
    # Failed: what librdkafka reported failed (a `Delivery failed` line each) and what it still held.
    held = int(figures["failed"]) - output.count("Delivery failed for the order")
    assert f"error: stopped with {held} orders not confirmed delivered" in output
